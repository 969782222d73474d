"""The one model configuration: a frozen dataclass with Hugging Face field names.

It is read from an HF ``config.json`` (both the classic ``rope_theta`` + ``rope_scaling`` form and
transformers 5's ``rope_parameters`` form) or built from GGUF metadata by ``weights_tool``, stored in
the manifest by ``to_json()`` and read back by the driver with ``from_json()``. Pure Python with no
third-party import, so the very same module runs in CPython and in Pyodide.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


class ConfigError(ValueError):
    """A model configuration we cannot run: the message says which field and why.
    ``kind`` / ``hint``: the structured form the page shows (driver.backend_js.error_info)."""

    kind = "config"
    hint = "This engine runs Llama-3-family models (LlamaForCausalLM) only."


SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
ROPE_TYPES = ("default", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3.1/3.2 ``llama3`` frequency scaling (HF ``rope_scaling`` with rope_type llama3)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int
    rope_type: str = "llama3"


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope_scaling: RopeScaling | None = None
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = field(default_factory=tuple)
    architectures: tuple[str, ...] = ("LlamaForCausalLM",)

    # ---- validation ----
    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim",
                     "max_position_embeddings"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if not (isinstance(self.rms_norm_eps, (int, float)) and 0 < self.rms_norm_eps < 1):
            raise ConfigError(f"rms_norm_eps must be in (0, 1), got {self.rms_norm_eps!r}")
        if not (isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0
                and math.isfinite(self.rope_theta)):
            raise ConfigError(f"rope_theta must be a positive number, got {self.rope_theta!r}")
        for a in self.architectures:
            if a not in SUPPORTED_ARCHITECTURES:
                raise ConfigError(f"unsupported architecture {a!r}; supported: "
                                  + ", ".join(SUPPORTED_ARCHITECTURES))

    # ---- derived sizes ----
    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def gqa_ratio(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    # ---- HF config.json ----
    @classmethod
    def from_hf(cls, d: dict) -> "ModelConfig":
        """Build from an HF config.json dict; refuse what this engine cannot run, by name."""
        if not isinstance(d, dict):
            raise ConfigError("config.json must hold a JSON object")
        archs = tuple(d.get("architectures") or ("LlamaForCausalLM",))
        model_type = d.get("model_type", "llama")
        if model_type != "llama":
            raise ConfigError(f"unsupported model_type {model_type!r}; only 'llama' "
                              "(LlamaForCausalLM: Llama-2/3/3.1/3.2, SmolLM2) is supported")
        for a in archs:
            if a not in SUPPORTED_ARCHITECTURES:
                raise ConfigError(f"unsupported architecture {a!r}; supported: LlamaForCausalLM")
        for key, bad in (("attention_bias", True), ("mlp_bias", True)):
            if d.get(key) is bad:
                raise ConfigError(f"{key}=true is not supported (Llama-3 has no biases)")
        if d.get("sliding_window") not in (None, 0):
            raise ConfigError("sliding_window attention is not supported")
        for moe_key in ("num_local_experts", "num_experts", "n_routed_experts"):
            if d.get(moe_key):
                raise ConfigError(f"mixture-of-experts models ({moe_key}) are not supported")
        if d.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"hidden_act {d.get('hidden_act')!r} is not supported (need silu)")

        for req in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads"):
            if req not in d:
                raise ConfigError(f"missing field {req!r}")

        # Rope: transformers 5 nests theta + scaling in rope_parameters; 4.x and Meta use
        # top-level rope_theta + rope_scaling. Both forms must give the same config.
        rp = d.get("rope_parameters")
        if isinstance(rp, dict):
            theta = rp.get("rope_theta", d.get("rope_theta", 10000.0))
            scaling = dict(rp)
            scaling.pop("rope_theta", None)
            rtype = scaling.get("rope_type", scaling.get("type", "default"))
            if rtype == "default":
                scaling = None
        else:
            theta = d.get("rope_theta", 10000.0)
            scaling = d.get("rope_scaling")
        rope_scaling = _parse_rope_scaling(scaling)

        heads = d["num_attention_heads"]
        head_dim = d.get("head_dim") or (d["hidden_size"] // heads if isinstance(heads, int)
                                         and heads > 0 else 0)
        eos = d.get("eos_token_id")
        eos_t = tuple(eos) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
        return cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-5)),
            rope_theta=float(theta),
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            rope_scaling=rope_scaling,
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=eos_t,
            architectures=archs,
        )

    # ---- manifest form ----
    def to_json(self) -> dict:
        out = asdict(self)
        out["eos_token_id"] = list(self.eos_token_id)
        out["architectures"] = list(self.architectures)
        return out

    @classmethod
    def from_json(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        rs = d.get("rope_scaling")
        d["rope_scaling"] = RopeScaling(**rs) if rs else None
        d["eos_token_id"] = tuple(d.get("eos_token_id") or ())
        d["architectures"] = tuple(d.get("architectures") or ("LlamaForCausalLM",))
        return cls(**d)

    # ---- RoPE ----
    def rope_inv_freq(self) -> list[float]:
        """Per-pair inverse frequencies (head_dim/2 values), with llama3 scaling applied.

        Follows transformers' ``_compute_llama3_parameters``: long wavelengths are divided by
        ``factor``, short ones kept, and the band between is smoothly interpolated.
        """
        half = self.head_dim // 2
        inv = [1.0 / (self.rope_theta ** (2 * i / self.head_dim)) for i in range(half)]
        rs = self.rope_scaling
        if rs is None:
            return inv
        low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor
        high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor
        out = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen < high_wavelen:
                out.append(f)
            elif wavelen > low_wavelen:
                out.append(f / rs.factor)
            else:
                smooth = ((rs.original_max_position_embeddings / wavelen - rs.low_freq_factor)
                          / (rs.high_freq_factor - rs.low_freq_factor))
                out.append((1 - smooth) * f / rs.factor + smooth * f)
        return out


def _parse_rope_scaling(s) -> RopeScaling | None:
    if s is None:
        return None
    if not isinstance(s, dict):
        raise ConfigError(f"rope_scaling must be an object or null, got {s!r}")
    rtype = s.get("rope_type", s.get("type", "default"))
    if rtype == "default":
        return None
    if rtype != "llama3":
        raise ConfigError(f"unsupported rope_type {rtype!r}; supported: " + ", ".join(ROPE_TYPES))
    try:
        return RopeScaling(
            factor=float(s["factor"]),
            low_freq_factor=float(s["low_freq_factor"]),
            high_freq_factor=float(s["high_freq_factor"]),
            original_max_position_embeddings=int(s["original_max_position_embeddings"]),
        )
    except KeyError as e:
        raise ConfigError(f"rope_scaling of type llama3 is missing {e.args[0]!r}") from None
