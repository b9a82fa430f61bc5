"""The frame around the pages: the one page list (navigation and the Home page's links), the checkpoint the
frame opened for this run, and the header every page starts with (`ctx = frame.begin(intro)`)."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

import checkpoints
import ui
from checkpoints import Ctx

_STATE = "frame.current"          # session state: (ctx, problem, page title) of this run


@dataclass(frozen=True)
class Entry:
    path: str        # relative to dashboard/
    title: str
    icon: str        # a Material icon (emoji need a colour-emoji font the browser may lack)
    url: str
    blurb: str       # what the page shows (Home's "Where to go next")


# The one page list, in sections (the sidebar's navigation groups them; Home's links follow this order).
SECTIONS: dict[str, list[Entry]] = {
    "Start": [
        Entry("views/home.py", "Home", ":material/home:", "home", "the checkpoint's summary card"),
        Entry("views/architecture.py", "Architecture", ":material/account_tree:", "Architecture",
              "every layer's output shape, parameters and receptive field"),
    ],
    "Training": [
        Entry("views/training.py", "Training", ":material/show_chart:", "Training",
              "how loss and accuracy moved, epoch by epoch; compare runs"),
        Entry("views/train_live.py", "Train a model", ":material/model_training:", "Train_a_model",
              "train a new model from the dashboard and watch its curves live"),
        Entry("views/training_batch.py", "Training batch", ":material/shuffle:", "Training_batch",
              "what the training loop feeds the network: crop, flip, normalisation"),
    ],
    "Results": [
        Entry("views/evaluation.py", "Evaluation", ":material/grid_on:", "Evaluation",
              "confusion matrix, per-class scores, calibration"),
        Entry("views/errors.py", "Errors", ":material/error:", "Errors",
              "the misclassified images, and why the model chose wrong"),
        Entry("views/sample.py", "One image", ":material/image_search:", "One_image",
              "one test image on its own: verdict, explanation, look-alikes, and your tag for it"),
        Entry("views/embeddings.py", "Embeddings", ":material/scatter_plot:", "Embeddings",
              "the whole test set as a 2-D map of the network's features"),
        Entry("views/label_issues.py", "Probably mislabelled", ":material/label_off:", "Label_issues",
              "test images whose label the model contradicts: the dataset's errors, not the model's"),
        Entry("views/slices.py", "Failure slices", ":material/join_inner:", "Failure_slices",
              "groups of similar test images the model gets wrong far more often than overall"),
        Entry("views/robustness.py", "Robustness", ":material/blur_on:", "Robustness",
              "accuracy under noise, blur, weather and digital corruptions, per class; the images that flip first"),
        Entry("views/compare.py", "Two models", ":material/compare:", "Compare",
              "two checkpoints on the same images: agreement, McNemar's test, where they disagree"),
        Entry("views/selections.py", "Selections", ":material/sell:", "Selections",
              "the image sets you tagged on other pages, as CSV"),
    ],
    "Inside the network": [
        Entry("views/filters.py", "Filters", ":material/filter:", "Filters",
              "the first layer's kernels, and how they formed in training"),
        Entry("views/feature_maps.py", "Feature maps", ":material/layers:", "Feature_maps",
              "what each layer's channels respond to in one image"),
        Entry("views/forward_pass.py", "Forward pass", ":material/calculate:", "Forward_pass",
              "one unit's arithmetic with the model's real numbers, down to the softmax"),
        Entry("views/layer_strip.py", "Through the layers", ":material/view_column:", "Through_the_layers",
              "one image through every layer, in one strip"),
        Entry("views/channel_vis.py", "Channel visualisation", ":material/auto_awesome:", "Channel_visualisation",
              "the pattern a channel wants to see, and the images that excite it"),
    ],
    "Explanations": [
        Entry("views/saliency.py", "Saliency", ":material/local_fire_department:", "Saliency",
              "which pixels drove a prediction, by many methods"),
        Entry("views/neighbours.py", "Nearest training images", ":material/hub:", "Neighbours",
              "the training images a prediction rests on"),
        Entry("views/faithfulness.py", "Faithfulness", ":material/fact_check:", "Faithfulness",
              "how far to trust a saliency map: deletion and insertion curves"),
        Entry("views/sanity.py", "Sanity check", ":material/rule:", "Sanity_check",
              "do the saliency maps change when the weights are randomised?"),
    ],
}
PAGES = [e for entries in SECTIONS.values() for e in entries]


def navigation():
    """st.navigation over SECTIONS (Home first and default); returns the page to run."""
    home = PAGES[0]
    pages = {section: [st.Page(e.path, title=e.title, icon=e.icon, url_path=None if e is home else e.url,
                               default=e is home) for e in entries]
             for section, entries in SECTIONS.items()}
    return st.navigation(pages, expanded=True)       # every page visible, no "View more"


def set_current(ctx: Ctx | None, problem: str | None, title: str) -> None:
    st.session_state[_STATE] = (ctx, problem, title)


def begin(intro: str, title: str | None = None, needs_model: bool = True) -> Ctx | None:
    """Title and the learner's introduction; returns the open checkpoint. Without one, says why (or how to
    train one) and, when the page needs a model, ends the page there."""
    ctx, problem, page_title = st.session_state.get(_STATE, (None, None, "CNN Lens"))
    if page_title != PAGES[0].title:
        ui.plotly_ready()           # charts: plotly's lazy caches built once, under a lock (not on Home)
    st.title(title or page_title)
    st.markdown(intro)
    if ctx is not None:
        return ctx
    if problem:
        st.warning("No checkpoint is open: the sidebar says what is wrong. Pick another checkpoint there, "
                   "or upload one.")
    else:
        no_checkpoint_help()
    if needs_model:
        st.stop()
    return None


def no_checkpoint_help() -> None:
    st.info(f"No checkpoint yet in `{checkpoints.checkpoint_dir()}`. Train one into it (about 5 minutes on a "
            "laptop CPU), then reload this page — or upload a `.pt` file in the sidebar:")
    st.code(checkpoints.train_command(), language="bash")


def links() -> None:
    """'Where to go next': one link per page after Home, from PAGES."""
    for e in PAGES[1:]:
        st.page_link(e.path, label=f"**{e.title}** — {e.blurb}", icon=e.icon)
