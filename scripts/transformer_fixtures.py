"""Write tests/fixtures/transformers/: tiny Hugging Face models as users export them.

Each family is built from a config with random weights (no hub download) and
saved three ways: legacy ONNX (``dynamo=False``, opset 17, with prunekit's
symbolic for ``aten::diff`` that the TorchScript intake also uses), dynamo ONNX
(opset 18) and a TorchScript trace, next to a ``models.json`` naming the
inputs. ``transformers`` is not a dependency of prunekit: run this with a
Python that has it and prunekit's torch, e.g.::

    python -m venv /tmp/hf && /tmp/hf/bin/pip install torch transformers
    /tmp/hf/bin/python scripts/transformer_fixtures.py [FAMILY ...]

(naming families writes only those, keeping the rest of ``models.json``).

The files are checked in; tests read them without ``transformers``.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit_server.modelio.fused_attention import register

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "transformers"
SEQ = 8
SMALL: dict[str, Any] = {"hidden_size": 16, "num_attention_heads": 4, "intermediate_size": 32}


class FirstOutput(nn.Module):
    """The model's first output (logits or last hidden state) as a plain tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, tuple) else next(iter(out.values()))


def _bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=64, num_hidden_layers=2, max_position_embeddings=32, **SMALL))


def _distilbert() -> nn.Module:
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(
        vocab_size=64, n_layers=2, dim=16, n_heads=4, hidden_dim=32, max_position_embeddings=32
    )
    return DistilBertModel(config)


def _vit() -> nn.Module:
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, **SMALL)
    return ViTModel(config, add_pooling_layer=False)


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=4, use_cache=False)
    return GPT2LMHeadModel(config)


def _llama_gqa() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        num_hidden_layers=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        use_cache=False,
        **SMALL,
    )
    return LlamaForCausalLM(config)


def _qwen_gqa() -> nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=64,
        hidden_size=16,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=4,
        intermediate_size=32,
        num_hidden_layers=2,
        max_position_embeddings=32,
        use_cache=False,
    )
    return Qwen2ForCausalLM(config)


def _swin() -> nn.Module:
    from transformers import SwinConfig, SwinModel

    config = SwinConfig(
        image_size=32,
        patch_size=4,
        embed_dim=16,
        depths=[2, 1],
        num_heads=[4, 4],
        window_size=4,
        mlp_ratio=2.0,
    )
    return SwinModel(config, add_pooling_layer=False)


def _whisper_encoder() -> nn.Module:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(
        num_mel_bins=16,
        d_model=16,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=32,
        max_source_positions=16,
    )
    return WhisperEncoder(config)


def _t5_encoder() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4)
    return T5EncoderModel(config)


def _ids() -> dict[str, Any]:
    return {"name": "input_ids", "shape": [2, SEQ], "dtype": "int64"}


FAMILIES: dict[str, tuple[Callable[[], nn.Module], dict[str, Any]]] = {
    "bert": (_bert, _ids()),
    "distilbert": (_distilbert, _ids()),
    "vit": (_vit, {"name": "pixel_values", "shape": [2, 3, 32, 32], "dtype": "float32"}),
    "gpt2": (_gpt2, _ids()),
    "llama_gqa": (_llama_gqa, _ids()),
    "qwen_gqa": (_qwen_gqa, _ids()),
    "swin": (_swin, {"name": "pixel_values", "shape": [2, 3, 32, 32], "dtype": "float32"}),
    "whisper_encoder": (
        _whisper_encoder,
        {"name": "input_features", "shape": [2, 16, 32], "dtype": "float32"},
    ),
    "t5_encoder": (_t5_encoder, _ids()),
}


def _sample(spec: dict[str, Any]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if spec["dtype"] == "int64":
        return torch.randint(0, 64, spec["shape"], generator=generator)
    return torch.randn(spec["shape"], generator=generator)


def _legacy(model: nn.Module, x: torch.Tensor, spec: dict[str, Any], path: Path) -> None:
    register()  # aten::diff, which decoders' masks trace into, has no symbolic in torch itself
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=[spec["name"]],
        output_names=["output"],
        dynamic_axes={spec["name"]: {0: "batch"}, "output": {0: "batch"}},
    )


def _dynamo(model: nn.Module, x: torch.Tensor, spec: dict[str, Any], path: Path) -> None:
    program = torch.onnx.export(
        model, (x,), dynamo=True, opset_version=18, external_data=False, verbose=False
    )
    assert program is not None
    program.save(str(path))


def _trace(model: nn.Module, x: torch.Tensor, spec: dict[str, Any], path: Path) -> None:
    torch.jit.save(torch.jit.trace(model, (x,), check_trace=False), str(path))


def _plain(message: str) -> str:
    """The first line of an exporter's message without terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", message.splitlines()[0])[:200]


SAVERS = {"legacy": (_legacy, "onnx"), "dynamo": (_dynamo, "onnx"), "trace": (_trace, "pt")}


def _save(name: str, factory: Callable[[], nn.Module], spec: dict[str, Any]) -> dict[str, str]:
    """Each format's file name, or why the exporter refused the model.

    Each format exports a model of its own (same seed, same weights): tracing may change a model
    (Swin clamps its window size to a traced tensor), which the next exporter must not see.
    """
    x = _sample(spec)
    written = {}
    for fmt, (save, suffix) in SAVERS.items():
        torch.manual_seed(0)
        model = FirstOutput(factory()).eval()
        path = OUT / f"{name}-{fmt}.{suffix}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                save(model, x, spec, path)
                written[fmt] = path.name
            except Exception as exc:  # the exporter's own limits, recorded as such
                path.unlink(missing_ok=True)
                written[fmt] = f"not exported: {type(exc).__name__}: {_plain(str(exc))}"
    return written


def main(names: list[str]) -> None:
    """Write the named families (all when none are named), keeping the other entries of models.json."""
    OUT.mkdir(parents=True, exist_ok=True)
    listed = OUT / "models.json"
    index = json.loads(listed.read_text()) if names and listed.exists() else {}
    for name, (factory, spec) in FAMILIES.items():
        if names and name not in names:
            continue
        index[name] = {"inputs": [spec], "files": _save(name, factory, spec)}
        print(name, "written")
    listed.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
