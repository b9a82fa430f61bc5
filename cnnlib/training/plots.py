"""training_results.png: train vs validation loss (left), validation accuracy (right)."""
from __future__ import annotations


def save_training_plot(history: list[dict], path: str, title: str = "", best_epoch: int | None = None) -> str:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * h["val_acc"] for h in history], "o-", color="tab:green", label="validation")
    if best_epoch:
        best = next(h for h in history if h["epoch"] == best_epoch)
        ax_acc.axvline(best_epoch, color="gray", ls="--", lw=1)
        ax_acc.annotate(f"best {100 * best['val_acc']:.1f}%", (best_epoch, 100 * best["val_acc"]),
                        textcoords="offset points", xytext=(-60, -15))
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
