"""Checkpoints of a training run in its work folder: one file per checkpoint (model, optimiser, step,
random state, history) written atomically, the newest ``CHECKPOINTS_KEPT`` kept, and the best
weights so far beside them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..core.atomic import atomic_file, move_into_place
from ..core.faults import fault_point
from .objective import QueryTable, SpladeModel

CHECKPOINTS_KEPT = 2  # the newest checkpoint and the previous good one


def step_of(path: Path) -> int:
    """The step in a ``checkpoint-STEP.pt`` or ``best-STEP`` name (-1 for another name)."""
    digits = path.name.split("-", 1)[-1].split(".")[0]
    return int(digits) if digits.isdigit() else -1


class Checkpoints:
    def __init__(self, work: Path):
        self.work = work

    def files(self) -> list[Path]:
        """The work folder's checkpoint files, newest first."""
        return sorted(self.work.glob("checkpoint-*.pt"), reverse=True)

    def save(self, model: SpladeModel, optimizer, step: int, history: dict,
             query_table: QueryTable | None = None) -> None:
        """One file holds all a resume needs (model, optimiser, step, random state, history), written
        beside its name and renamed into place; then all but the newest ``CHECKPOINTS_KEPT`` go."""
        import torch

        state = {"model": model.model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "rng": torch.get_rng_state(), "history": json.dumps(history)}
        if query_table is not None and query_table.learned:
            state["query_table"] = query_table.weights.detach()
        with atomic_file(self.work / f"checkpoint-{step:07d}.pt", "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            fault_point("train.checkpoint")
        fault_point("train.rotate")
        for old in self.files()[CHECKPOINTS_KEPT:]:
            old.unlink()
        # best models: each improves on the one before, so the two kept checkpoints' histories name at
        # most the two newest up to this step; others (and any of a later step, left by a killed run) go
        bests = sorted((f for f in self.work.glob("best-*") if f.is_dir()), key=step_of, reverse=True)
        keep = [f for f in bests if step_of(f) <= step][:CHECKPOINTS_KEPT]
        for folder in bests:
            if folder not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    def load(self, model: SpladeModel, optimizer, query_table: QueryTable | None = None) -> tuple[int, dict]:
        """(step, history) of the newest checkpoint that can be read, loaded into the model and the
        optimiser; one that cannot (cut short, damaged) is skipped for the previous one, with a warning."""
        import pickle
        import warnings

        import torch

        checkpoints = self.files()
        for path in checkpoints:
            try:
                state = torch.load(path, map_location=model.device, weights_only=True)
                history = json.loads(state["history"])
                if state["step"] != step_of(path):
                    raise ValueError(f"it holds step {state['step']}")
                if history.get("best") and not (self.work / f"best-{history['best']['step']:07d}").is_dir():
                    raise ValueError(f"its best model (step {history['best']['step']}) is gone")
                model.model.load_state_dict(state["model"])
                if "query_table" in state:
                    with torch.no_grad():
                        query_table.weights.copy_(state["query_table"])
                optimizer.load_state_dict(state["optimizer"])
                torch.set_rng_state(state["rng"])
            except (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as exc:
                warnings.warn(f"{path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                              "trying the checkpoint before it", stacklevel=2)
                continue
            return int(state["step"]), history
        if checkpoints:
            warnings.warn(f"no checkpoint in {self.work} can be read: training starts again from step 0",
                          stacklevel=2)
        return 0, {"steps": [], "dev": [], "best": None}

    def keep_best(self, record: dict, history: dict, model_folder: Path) -> None:
        """Keep the weights in ``model_folder`` as the best so far where ``record`` beats the best."""
        best = history.get("best")
        if best is None or record["nDCG@10"] > best["nDCG@10"]:
            tmp = self.work / "best.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(model_folder, tmp)
            # by step: the checkpoint's history names its best model, whichever evaluation came later
            move_into_place(tmp, self.work / f"best-{record['step']:07d}")
            history["best"] = record

