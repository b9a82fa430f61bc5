"""Train a model from the dashboard: a form with the settings a learner tunes, then live curves and progress of
the background run (cnnlib.training.jobs), which keeps going while you browse other pages."""
import frame
import streamlit as st
import teaching_jobs as tj
import ui

frame.begin(
    "**How to read this:** fill in the form and press **Start**. Training runs in the background on this "
    "machine — you can keep browsing; come back here (or open this page in another tab) to watch it. Each point "
    "on the curves is one epoch. When the run finishes, its checkpoint appears in the sidebar's picker and on "
    "the Training page, ready to be looked inside. Only one run at a time.", needs_model=False)


@st.fragment(run_every=2)
def live_run() -> None:
    """The current (or last) run: status, progress, curves, log; Cancel / Resume. Redrawn every 2 s."""
    with ui.guard("reading the training run"):
        job = tj.current()
        if job is None:
            st.caption("No run has been started from this checkpoint folder yet.")
            return
        status = job.status
        prog = job.progress()
        if tj.finished_now(job):
            st.rerun()                       # the whole page: the sidebar's picker lists the new checkpoint
        head = f"**{job.name}** · started {job.started:%H:%M} · status: **{status}**"
        st.markdown(head)
        running = status in ("starting", "running")
        frac = min(1.0, float(prog.get("fraction") or 0.0))
        st.progress(frac, text=f"{100 * frac:.0f}%")
        st.caption(tj.progress_line({**prog, "epochs": prog.get("epochs") or job.config.get("epochs") or 0}, running))
        if status == "finished":
            st.success(f"Finished: **{job.name}.pt** is in the sidebar's checkpoint picker and on the Training page.")
        elif status == "failed":
            st.error(f"The run failed: {tj.one_sentence(job.error or 'see the log below')}")
        elif status in ("cancelled", "interrupted"):
            st.warning(f"The run was {status}." + ((" Resume continues it where it stopped." if prog.get("completed")
                                                    else " No epoch had finished: Resume starts it again with the "
                                                         "same settings.") if job.resumable else ""))
        history = job.history()
        if history:
            ui.show_chart(tj.curves(history), key="tl_curves", filename=f"training-{job.name}")
        elif running:
            st.caption("The curves appear after the first epoch; until then the batch count and the running loss "
                       "above show the epoch moving.")
        c1, c2, _ = st.columns([1, 1, 4])
        if running and not prog.get("testing") and c1.button("Cancel", key="tl_cancel", icon=":material/stop:"):
            with st.spinner("Stopping the run…"):
                tj.cancel()
            st.rerun()
        if job.resumable and c2.button("Resume", key="tl_resume", icon=":material/play_arrow:"):
            try:
                tj.resume(job.name, tj.default_threads())
            except Exception as e:  # noqa: BLE001 - CNNLibError's sentence; anything else reads the same
                st.error(tj.one_sentence(e))
            else:
                st.rerun()
        with st.expander("Log (last lines)"):
            st.code(job.log_tail(15) or "(empty)", language=None)


st.subheader("The current run")
live_run()

st.subheader("Start a new run")
with ui.guard("drawing the form"):
    recipes = tj.recipes()
    recipe = st.selectbox("Recipe", recipes, **ui.kept("tl_recipe", "default", recipes),
                          help="A recipe is a set of tested settings; the fields below start from its values.")
    d = tj.recipe_defaults(recipe)
    models = tj.models()
    with st.container(key="tl_start"), st.form("tl_form", border=True):
        c1, c2, c3 = st.columns(3)
        epochs = c1.number_input("Epochs", 1, 200, int(d["epochs"]), key=f"tl_epochs_{recipe}",
                                 help="Passes over the training images. More: better, until it overfits.")
        batch = c2.number_input("Batch size", 1, 4096, int(d["batch_size"]), key=f"tl_batch_{recipe}",
                                help="Images per optimiser step.")
        lr = c3.number_input("Learning rate", 1e-6, 10.0, float(d["lr"]), format="%.4g", key=f"tl_lr_{recipe}",
                             help="The step size (the peak rate of the one-cycle schedule).")
        c4, c5, c6 = st.columns(3)
        model = c4.selectbox("Model", models, index=models.index(d["model"]) if d["model"] in models else 0,
                             key=f"tl_model_{recipe}")
        dropout = c5.number_input("Dropout", 0.0, 0.9, float(d["dropout"]), step=0.05, key=f"tl_dropout_{recipe}",
                                  help="Share of the classifier's inputs zeroed at random in training.")
        name = c6.text_input("Run name", key="tl_name", placeholder="my_run",
                             help="The checkpoint is written as <name>.pt in the checkpoint folder.")
        c7, c8, c9 = st.columns(3)
        dataset = c7.selectbox("Dataset", tj.DATASETS, key="tl_data")
        folder = c8.text_input("Folder (for a folder dataset)", key="tl_folder",
                               placeholder="path/to/ImageFolder (train/<class>/…)")
        threads = c9.number_input("CPU threads", 1, 64, tj.default_threads(), key="tl_threads",
                                  help="Leave a core free so the dashboard stays responsive.")
        submitted = st.form_submit_button("Start", type="primary", icon=":material/play_arrow:")
    if submitted:
        if not name.strip():
            st.error("Give the run a name first (its checkpoint is saved as <name>.pt).")
        elif dataset == tj.DATASETS[-1] and not folder.strip():
            st.error("Type the dataset folder's path (an ImageFolder tree: train/<class>/*.png).")
        else:
            form = {"epochs": int(epochs), "batch_size": int(batch), "lr": float(lr), "model": model,
                    "dropout": float(dropout), "data": tj.dataset_value(dataset, folder)}
            try:
                with st.spinner("Checking the settings and starting…"):
                    tj.start(name, recipe, form, threads)
            except Exception as e:  # noqa: BLE001 - CNNLibError's one sentence (a missing dataset, a busy folder…)
                st.error(f"Not started: {tj.one_sentence(e)}")
            else:
                st.rerun()
