"""What the robustness benchmark runs: the variants (speech tokenisations), seeds, budget and conditions."""

from __future__ import annotations

import dataclasses

from flow_omni.config import Config
from flow_omni.errors import ConfigError
from flow_omni.eval.heldout import parse_condition
from flow_omni.eval.robustness import FINETUNED, TASKS


@dataclasses.dataclass
class VariantSpec(Config):
    """One speech tokenisation to compare (FlowOmniConfig fields that differ between variants)."""

    name: str
    tokens: str = "continuous"  # continuous | kmeans | rvq | coarse_fine: how the model speaks
    quantizer: dict | None = None
    r: int = 4
    preset: str = "tiny"
    #: SpeechEncoderConfig overrides: how the model listens, e.g. ``{"input_units": 512}`` for discrete
    #: units of the frozen encoder's outputs instead of its continuous features
    encoder: dict | None = None

    def model_overrides(self) -> dict:
        out = {} if self.tokens == "continuous" else {"tokens": self.tokens, "quantizer": dict(self.quantizer or {})}
        if self.encoder:
            out["encoder"] = dict(self.encoder)
        return out


def default_variants() -> list[VariantSpec]:
    """The benchmark issue's grid: the baseline and its twin that listens through discrete units (both
    speaking continuously), then three other ways to speak (listening through the continuous features)."""
    return [
        VariantSpec("continuous"),
        VariantSpec("units_in", encoder={"input_units": 512}),
        VariantSpec("kmeans", tokens="kmeans", quantizer={"codebook_size": 256}),
        VariantSpec("rvq4", tokens="rvq", quantizer={"codebook_size": 256, "num_levels": 4}),
        VariantSpec("continuous_r8", r=8),
    ]


#: The variants fine-tuned on noisy inputs unless told otherwise: the continuous-input and the
#: discrete-input model (the grid's "noisy-domain fine-tune").
DEFAULT_FINETUNED = ("continuous", "units_in")
#: Training steps of every grid run; see the README ("Continuous vs discrete") for how it was chosen.
GRID_STEPS = 3000
#: The corpus of the learning curves (README, "Models that learn"): 5,000 sentences and 2,500 spoken questions.
LEARN_CORPUS = {"n_sentences": 5000, "n_qa": 2500, "n_interleaved": 0}


@dataclasses.dataclass
class RobustnessConfig(Config):
    """The benchmark. The defaults are the full grid (README, "Continuous vs discrete"): the ``learn``
    recipe for every variant, three seeds, noise, rooms, pitch, rate and unseen voices, and a noisy-domain
    fine-tune of the continuous-input and the discrete-input model."""

    out_dir: str = "bench_robustness"
    corpus: str = "data/learn"  # a flow-omni corpus folder; built here if missing
    #: CorpusConfig overrides for that build
    corpus_config: dict = dataclasses.field(default_factory=lambda: dict(LEARN_CORPUS))
    variants: list[VariantSpec] = dataclasses.field(default_factory=default_variants)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    #: the training recipe (name or YAML path) every run starts from, before the variant's model fields
    #: and ``train``; None = TrainConfig's defaults
    recipe: str | None = "learn"
    #: TrainConfig overrides shared by every variant and seed (the equal budget)
    train: dict = dataclasses.field(default_factory=lambda: {"max_steps": GRID_STEPS, "precision": "bf16-mixed"})
    noise_kinds: list[str] = dataclasses.field(default_factory=lambda: ["white", "pink", "babble"])
    snrs: list[float] = dataclasses.field(default_factory=lambda: [20.0, 10.0, 5.0, 0.0])
    other_conditions: list[str] = dataclasses.field(
        default_factory=lambda: ["reverb@0.3", "reverb@0.8", "pitch@3", "pitch@-3", "speed@1.15", "speed@0.85"]
    )
    unseen_voices: bool = True
    tasks: list[str] = dataclasses.field(default_factory=lambda: list(TASKS))
    max_items: int = 24  # test utterances (and QA questions) per condition
    max_new_positions: int = 300
    sample_wavs: int = 1  # example inputs/outputs per condition, kept by the first seed's runs
    vocoder: str | None = None  # a Vocos checkpoint folder for the sample WAVs; None = Griffin-Lim
    #: also score TTS and spoken QA answers by Whisper tiny.en (flow_omni[eval]) on the vocoded output,
    #: when installed; the spoken answers only under these conditions (Whisper costs ~1 s per answer)
    external_asr: bool = True
    speech_answer_conditions: list[str] = dataclasses.field(default_factory=lambda: ["clean"])
    threads: int | None = None  # torch threads per run; None = all cores split evenly between `jobs`
    #: (variant, seed) runs trained and scored side by side in separate processes; each finished run's
    #: scores are kept in ``runs/<variant>-seed<k>/eval.json`` so a rerun (or an interrupted run) reuses them
    jobs: int = 2
    #: variants that are, after training and scoring, fine-tuned on noisy inputs (the noisy_finetune recipe
    #: from the trained model, same corpus) and scored again under the same conditions as "<name>+noisy_ft"
    #: None = those of DEFAULT_FINETUNED that are among the variants
    finetune_variants: list[str] | None = None
    #: the fine-tune's steps as a share of the base training's
    finetune_share: float = 0.2
    #: TrainConfig overrides of the fine-tune, over the noisy_finetune recipe
    finetune: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"RobustnessConfig.jobs must be >= 1, got {self.jobs}")
        if not 0 < self.finetune_share <= 1:
            raise ConfigError(f"RobustnessConfig.finetune_share must be in (0, 1], got {self.finetune_share}")
        bad = sorted(set(self.tasks) - set(TASKS))
        if bad:
            raise ConfigError(f"RobustnessConfig.tasks: unknown {bad}; valid: {list(TASKS)}")
        if not self.variants or not self.seeds:
            raise ConfigError("RobustnessConfig: at least one variant and one seed are needed")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ConfigError(f"RobustnessConfig.variants: names must be unique, got {names}")
        if any(FINETUNED in n for n in names):
            raise ConfigError(f"RobustnessConfig.variants: {FINETUNED!r} marks fine-tuned models; rename {names}")
        unknown = sorted(set(self.finetune_variants or []) - set(names))
        if unknown:
            raise ConfigError(f"RobustnessConfig.finetune_variants: {unknown} are not variants; variants: {names}")
        for c in self.conditions():
            parse_condition(c)

    @classmethod
    def demo(cls, out_dir: str = "demo_out") -> RobustnessConfig:
        """``make demo``: the benchmark reduced to minutes on 2 CPU cores (the README gives the measured time).

        The ``learn`` recipe (the pretrained Whisper tiny.en encoder, frozen, with cached features; one
        output voice) on a corpus of short sentences and spoken questions; the continuous variant
        against one discrete variant (k-means, K = 256, same r), trained side by side (one core each)
        with the same budget; one seed; the conditions clean / white and babble noise at 10 and 0 dB /
        pitch +3 / unseen voices.

        The recipe's lr and task mix are changed for listening: lr 1e-3 instead of 2e-3 and A2T drawn three
        times as often. At 500 steps that lowered clean ASR CER for both variants and cost the continuous
        model's TTS (README, "Models that learn"; benchmarks/results/learning_demo_budget.json). Training in
        bf16-mixed autocast takes about half the time per step on this CPU and learned as well in the
        learn recipe's runs. 700 steps: what fits the 15 minutes on the slower of the two machines the
        README's demo timings come from.
        """
        return cls(
            out_dir=out_dir,
            corpus=f"{out_dir}/corpus",
            corpus_config={"n_sentences": 1500, "n_qa": 800, "n_interleaved": 0},
            variants=[
                VariantSpec("continuous"),
                VariantSpec("kmeans", tokens="kmeans", quantizer={"codebook_size": 256}),
            ],
            seeds=[0],
            recipe="learn",
            train={
                "max_steps": 700,
                "precision": "auto",
                "optim": {"warmup_steps": 50, "lr": 1e-3},
                "data": {"task_weights": {"A2T": 3.0, "T2A": 1.0, "A2A": 1.0}},
            },
            noise_kinds=["white", "babble"],
            snrs=[10.0, 0.0],
            other_conditions=["pitch@3"],
            max_items=8,
            max_new_positions=200,
            jobs=2,
            finetune_variants=[],
        )

    def tuned_variants(self) -> list[str]:
        """The names of the variants that are fine-tuned on noisy inputs after training."""
        if self.finetune_variants is None:
            return [v.name for v in self.variants if v.name in DEFAULT_FINETUNED]
        return list(self.finetune_variants)

    def conditions(self) -> list[str]:
        """Input conditions for ASR and QA, clean first."""
        noisy = [f"{k}@{s:g}" for k in self.noise_kinds for s in self.snrs]
        return ["clean"] + noisy + list(self.other_conditions)


__all__ = ["RobustnessConfig", "VariantSpec", "default_variants"]
