"""The LightningModule around FlowOmni: losses per term, AdamW + warm-up/cosine, NaN/Inf guard.

Loss normalisation under DDP: each term is a mean over the positions that count (text tokens,
state positions, speech tokens). With several ranks, a plain per-rank mean averaged by DDP would
weight a rank's tokens by 1/(its own count); instead each rank scales its mean by
``n_rank * world / n_global`` (counts all-reduced), so the averaged gradient is exactly the
gradient of the global per-token mean — N processes train like one process with the same global
batch (tested). Every random draw comes from per-item seeds (see :mod:`flow_omni.data.sampler`)
plus a per-step seed for anything else (:meth:`FlowOmniModule.step_seed`: an explicit generator for
the model's own draws, a seeded fork of torch's global RNG for dropout, e.g. LoRA's), which is what
makes a resumed run repeat an uninterrupted one; the global RNG itself is never reseeded.

A batch whose items were all skipped (unreadable audio, see :mod:`flow_omni.data.report`) arrives as
an ``EmptyBatch`` and trains as if it had not been drawn. One process skips the backward pass; the
optimiser then finds no gradient, and AdamW leaves every weight without one alone. Under DDP the
other ranks wait in the gradient all-reduce, so an idle rank runs a backward pass of zero through
every weight; that would give a zero gradient (which AdamW applies: momentum, weight decay) to
weights no rank's items used, so in such a step the ranks all-reduce which weights their items used
and drop the gradients of the others: N ranks still train like one process. (Not under FSDP, whose
flat parameters are not the module's: there such weights take an AdamW step on a zero gradient.)
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy

from flow_omni.data.report import EmptyBatch
from flow_omni.errors import FlowOmniError
from flow_omni.layout import Batch
from flow_omni.models.flow_omni import FlowOmni, FlowOmniOutput
from flow_omni.training.config import TrainConfig
from flow_omni.training.schedule import warmup_cosine

TERMS = ("text", "state", "flow", "code", "ctc")
#: Where a training checkpoint keeps the run's TrainConfig, as YAML text.
TRAIN_CONFIG_KEY = "flow_omni_train_config"


class NonFiniteLossError(FlowOmniError, FloatingPointError):
    """The loss or the gradient norm became NaN/Inf; training stopped without saving."""


class FlowOmniModule(L.LightningModule):
    def __init__(self, model: FlowOmni, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.loss_log: Path | None = None  # rank 0 appends one JSON line per step here
        # DDP only, since the last optimiser step: was a rank idle, and which weights did this rank's items use?
        self._idle_since_step = False
        self._used_since_step: set[int] = set()

    # ----------------------------------------------------------------------------- parameters
    def configure_optimizers(self):
        o = self.config.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise FlowOmniError("no trainable parameters (check `trainable` and `lora` in the config)")
        # No weight decay on biases, norms and embeddings-as-vectors (the usual GPT recipe), nor on a weight
        # of which only some rows train (train_special_token_rows): decay would shrink its frozen rows.
        decay = [p for p in params if p.dim() >= 2 and getattr(p, "row_mask", None) is None]
        no_decay = [p for p in params if p.dim() < 2 or getattr(p, "row_mask", None) is not None]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr,
            betas=tuple(o.betas),
        )
        factor = functools.partial(
            warmup_cosine, warmup=o.warmup_steps, total=self.config.max_steps, min_ratio=o.min_lr_ratio
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --------------------------------------------------------------------------------- losses
    def _distributed(self) -> bool:
        world = self.trainer.world_size if self._trainer is not None else 1
        return world > 1 and dist.is_available() and dist.is_initialized()

    def _normalised_loss(self, out: FlowOmniOutput | None) -> torch.Tensor:
        """The loss to backpropagate (see the module doc); ``out`` is None for an idle DDP rank."""
        if not self._distributed():
            return out.loss
        w = self.model.config.loss_weights
        terms = {}
        if out is not None:
            terms = {
                "text": (out.text_loss, out.num_text, w.text),
                "state": (out.state_loss, out.num_state, w.state),
                "flow": (out.flow_loss, out.num_speech, w.flow),
                "code": (out.loss.new_zeros(()) if out.code_loss is None else out.code_loss, out.num_speech, w.code),
                "ctc": (out.loss.new_zeros(()) if out.ctc_loss is None else out.ctc_loss, out.num_ctc, w.ctc),
            }
        counts = [float(terms[t][1]) if terms else 0.0 for t in TERMS]
        local = torch.tensor([*counts, float(out is None)], device=self.device)  # last: "this rank is idle"
        total = local.clone()
        dist.all_reduce(total)
        self._idle_since_step |= bool(total[-1] > 0)
        if out is None:
            # Zero, through every trainable weight: backward, and the gradient all-reduce the other
            # ranks wait in, run as for any batch.
            return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
        exact = isinstance(self.trainer.strategy, DDPStrategy)
        # Which weights this rank used matters only in a step with an idle rank; with accumulation an
        # idle micro-batch may come after this one, so then it is noted in every micro-batch.
        if exact and (self._idle_since_step or self.trainer.accumulate_grad_batches > 1):
            self._used_since_step |= _parameters_in_graph(out.loss)
        world = self.trainer.world_size
        loss = out.loss.new_zeros(())
        for i, t in enumerate(TERMS):
            mean, _, weight = terms[t]
            if total[i] > 0:
                loss = loss + weight * mean * (local[i] * world / total[i])
        return loss

    def _check_finite(self, out: FlowOmniOutput, where: str) -> None:
        if torch.isfinite(out.loss):
            return
        ckpt = Path(self.config.out_dir) / "checkpoints" / "last.ckpt"
        keep = f"the last good checkpoint is kept at {ckpt}" if ckpt.exists() else "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"{where}: the loss became {out.loss.item()} at step {self.global_step} "
            f"(text {out.text_loss.item():.4g}, state {out.state_loss.item():.4g}, flow {out.flow_loss.item():.4g}); "
            f"training stopped and nothing was saved after it; {keep}. Lower optim.lr, raise warmup_steps, "
            "or check the data of this step"
        )

    def step_seed(self) -> int:
        """The seed of this training step's random draws: a function of (seed, step, rank) alone, so that a
        resumed run draws what an uninterrupted one did."""
        return self.config.seed * 1_000_003 + self.global_step * 101 + self.global_rank

    def training_step(self, batch: Batch | EmptyBatch, batch_idx: int):
        if isinstance(batch, EmptyBatch):  # every item of this rank's share was skipped (reported by the data module)
            # One process: None, and Lightning skips the backward pass. DDP: see the module doc.
            return self._normalised_loss(None) if self._distributed() else None
        seed = self.step_seed()
        generator = torch.Generator(device=self.model.device).manual_seed(seed)
        # Dropout (LoRA's, a pretrained backbone's) can only draw from torch's global RNG: it gets a fork of
        # it seeded for this step, and the global RNG is left as it was.
        devices = [self.model.device.index or 0] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = self.model(batch, generator=generator)
        self._check_finite(out, "training")
        loss = self._normalised_loss(out)
        bs = batch.text.shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=bs, sync_dist=False)
        for t, value in _terms(out):
            self.log(f"train/{t}", value, batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        if self.global_rank == 0 and self.loss_log is not None:
            with open(self.loss_log, "a") as fh:
                fh.write(json.dumps({"step": self.global_step, "epoch": self.current_epoch, **out.as_dict()}) + "\n")
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        if self._idle_since_step and isinstance(self.trainer.strategy, DDPStrategy):  # alike on every rank
            self._drop_unused_gradients()
        self._idle_since_step, self._used_since_step = False, set()
        norms = [p.grad.detach().norm() for p in self.model.parameters() if p.grad is not None]
        if norms:
            total = torch.stack(norms).norm()
            if not torch.isfinite(total):
                raise NonFiniteLossError(
                    f"the gradient norm became {float(total)} at step {self.global_step}; "
                    "training stopped without saving. Lower optim.lr or check the data"
                )
            self.log("train/grad_norm", total, batch_size=1)

    def _drop_unused_gradients(self) -> None:
        """Gradients of the weights that no rank's items used since the last step become None, as
        one process would have them (an idle rank gave every weight a zero gradient)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        used = torch.tensor([float(id(p) in self._used_since_step) for p in params], device=self.device)
        dist.all_reduce(used)
        for p, n in zip(params, used.tolist()):
            if n == 0:
                p.grad = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self.config.optim.grad_clip > 0:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.config.optim.grad_clip, gradient_clip_algorithm="norm"
            )

    def validation_step(self, batch: Batch | EmptyBatch, batch_idx: int):
        if isinstance(batch, EmptyBatch):  # every item was skipped (reported by the data module)
            return
        out = self.model(batch)
        self._check_finite(out, "validation")
        bs = batch.text.shape[0]
        self.log("val/loss", out.loss, prog_bar=True, batch_size=bs, sync_dist=True)
        for t, value in _terms(out):
            # The CTC term is not synced: a rank whose batch has no transcripts has none, and a synced
            # log would wait for it forever; the other terms exist on every rank.
            self.log(f"val/{t}", value, batch_size=bs, sync_dist=t != "ctc")

    # ------------------------------------------------------------------------------- resuming
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The run's settings as the YAML text config.yaml holds (a string loads with weights_only, whatever
        # the config holds): a resume on another machine keeps the precision the run started in (train()).
        checkpoint[TRAIN_CONFIG_KEY] = self.config.to_yaml()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Steps after the checkpoint that were logged before a crash will be trained again: drop them.
        if self.loss_log is not None and self.loss_log.exists() and self.global_rank == 0:
            step = int(checkpoint.get("global_step", 0))
            lines = [ln for ln in self.loss_log.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln)["step"] < step]
            self.loss_log.write_text("".join(ln + "\n" for ln in kept))


def _parameters_in_graph(loss: torch.Tensor) -> set[int]:
    """``id`` of every leaf tensor (weight) that backward from ``loss`` would give a gradient."""
    found: set[int] = set()
    seen: set = set()
    stack = [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        leaf = getattr(fn, "variable", None)  # AccumulateGrad nodes hold the weight they write to
        if leaf is not None:
            found.add(id(leaf))
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return found


def _terms(out: FlowOmniOutput) -> list[tuple[str, torch.Tensor]]:
    """The loss terms this batch has: the CTC term is None when it is off or no item has a transcript."""
    return [(t, getattr(out, f"{t}_loss")) for t in TERMS if getattr(out, f"{t}_loss") is not None]


def read_loss_log(path: str | Path) -> list[dict]:
    """The per-step losses a run wrote (``train_log.jsonl``), one dict per step in order."""
    rows = [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
    by_step = {r["step"]: r for r in rows}  # a re-run step (after a resume) replaces the old line
    return [by_step[s] for s in sorted(by_step)]
