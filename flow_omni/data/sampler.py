"""Which sample, in which task format, in which batch: a deterministic, resumable batch plan.

Each epoch the plan assigns every usable manifest entry one task drawn from the configured
weights (among the tasks the entry supports), sorts items by estimated sequence length inside
windows of ``bucket_size`` batches (so a batch holds items of similar length and little padding),
cuts the windows into global batches and shuffles the batch order. Everything is a function of
``(seed, epoch)``, and each item carries its own seed (from ``seed``, ``epoch`` and the entry), so:

* a run resumed mid-epoch continues exactly after the batches it already trained on (:meth:`resume_at`);
* under DDP every rank builds the same global batches and takes its own slice of each
  (``rank::world_size``), so N ranks see the same items as one process with the same global batch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from torch.utils.data import Sampler

from flow_omni.errors import ConfigError

TASK_ORDER = ("A2T", "T2A", "A2A", "T2T", "MIX")


@dataclass(frozen=True)
class ItemKey:
    """One training item: manifest entry ``index`` in ``task`` format, with its own ``seed``."""

    index: int
    task: str
    seed: int


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 62-bit seed for one item that does not depend on batch composition or rank."""
    return random.Random(f"{seed}/{epoch}/{index}").getrandbits(62)


def draw_task(rng: random.Random, eligible: Sequence[str], weights: Mapping[str, float]) -> str | None:
    """One task among ``eligible`` with probability proportional to ``weights`` (None: no weight)."""
    tasks = [t for t in TASK_ORDER if t in eligible and weights.get(t, 0.0) > 0]
    if not tasks:
        return None
    return rng.choices(tasks, weights=[weights[t] for t in tasks])[0]


class BucketBatchSampler(Sampler[list[ItemKey]]):
    """Yields this rank's share of each global batch, as lists of :class:`ItemKey`.

    Args:
        eligible: per entry, the tasks it supports (e.g. ``["A2T", "T2A"]``).
        cost: ``cost(index, task)``, an estimate of the laid-out sequence length.
        weights: task → sampling weight.
        batch_size: the *global* batch size; each of ``world_size`` ranks gets ``batch_size / world_size``.
        shuffle: False gives a fixed plan (validation): epoch 0's draws, batches in length order.
    """

    def __init__(
        self,
        eligible: Sequence[Sequence[str]],
        cost,
        weights: Mapping[str, float],
        batch_size: int,
        *,
        bucket_size: int = 16,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"bad rank {rank} for world_size {world_size}")
        if batch_size % world_size:
            raise ConfigError(
                f"the global batch_size {batch_size} must be divisible by the number of processes "
                f"({world_size}) so that every rank gets the same share"
            )
        unknown = sorted(set(weights) - set(TASK_ORDER))
        if unknown:
            raise ConfigError(f"unknown task(s) {unknown} in task_weights; valid: {list(TASK_ORDER)}")
        self.eligible, self.cost, self.weights = eligible, cost, dict(weights)
        self.batch_size, self.bucket_size, self.seed = batch_size, max(1, bucket_size), seed
        self.shuffle, self.drop_last, self.rank, self.world_size = shuffle, drop_last, rank, world_size
        self._plan_cache: tuple[int, list[list[ItemKey]]] | None = None
        self._start = 0  # global batches before the next __iter__ (see resume_at)
        if not self.plan(0):
            raise ConfigError(
                f"no training batches: {len(eligible)} entries, batch_size {batch_size}, task weights {self.weights}; "
                "give more data, a smaller batch_size, or weights for tasks the data supports "
                "(A2A and T2T need entries with answer_audio / answer_text)"
            )

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the plan keeps its own position (Lightning's epoch count can differ after a resume)."""

    def plan(self, epoch: int) -> list[list[ItemKey]]:
        """The global batches of ``epoch`` (all ranks' items)."""
        ep = epoch if self.shuffle else 0
        if self._plan_cache is not None and self._plan_cache[0] == ep:
            return self._plan_cache[1]
        rng = random.Random(f"plan/{self.seed}/{ep}")
        order = list(range(len(self.eligible)))
        if self.shuffle:
            rng.shuffle(order)
        items = []
        for i in order:
            task = draw_task(rng, self.eligible[i], self.weights)
            if task is not None:
                items.append(ItemKey(i, task, item_seed(self.seed, ep, i)))
        window = self.batch_size * self.bucket_size if self.shuffle else max(1, len(items))
        batches: list[list[ItemKey]] = []
        for start in range(0, len(items), window):
            chunk = sorted(items[start : start + window], key=lambda k: (self.cost(k.index, k.task), k.index))
            for b in range(0, len(chunk), self.batch_size):
                batch = chunk[b : b + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        self._plan_cache = (ep, batches)
        return batches

    def _shard(self, batch: list[ItemKey]) -> list[ItemKey]:
        if self.world_size == 1:
            return batch
        if len(batch) % self.world_size:  # only a last, partial batch (drop_last=False)
            batch = batch[: len(batch) - len(batch) % self.world_size] or batch[:1] * self.world_size
        return batch[self.rank :: self.world_size]

    @property
    def batches_per_epoch(self) -> int:
        return len(self.plan(0))

    def __iter__(self) -> Iterator[list[ItemKey]]:
        """The rest of the current epoch of the plan, from the stream position ``_start``.

        The position is a count of *global* batches since the start of training, so it means the
        same thing on every rank and after a resume; the next call starts the following epoch
        (prefetching may read ahead of training, so the position is not advanced per batch).
        """
        if not self.shuffle:
            yield from (self._shard(b) for b in self.plan(0))
            return
        per_epoch = self.batches_per_epoch
        epoch, offset = divmod(self._start, per_epoch)
        self._start = (epoch + 1) * per_epoch
        for batch in self.plan(epoch)[offset:]:
            yield self._shard(batch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def resume_at(self, batches_done: int) -> None:
        """Continue after ``batches_done`` global batches (what a checkpoint recorded)."""
        self._start = int(batches_done)
