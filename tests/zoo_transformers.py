"""The zoo's fully connected and attention models: an MLP, a tiny transformer, BERT- and ViT-style."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class MLP(nn.Module):
    """Flatten from a 3-D input, Linear chains, dropout, GELU, tanh, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 24)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(24, 16)
        self.fc3 = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(F.relu(self.fc1(x.flatten(1))))
        y = torch.tanh(F.gelu(self.fc2(y)))
        return torch.log_softmax(self.fc3(y), -1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, -1).transpose(1, 2)
        k = self.k(x).view(b, t, self.heads, -1).transpose(1, 2)
        v = self.v(x).view(b, t, self.heads, -1).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
        return self.o(y)


class TinyTransformer(nn.Module):
    """Embedding + positions, hand-written multi-head attention, LayerNorm, a GELU FFN."""

    def __init__(self, vocab: int = 40, dim: int = 16, heads: int = 2, seq: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, seq, dim) * 0.1)
        self.attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 32)
        self.ff2 = nn.Linear(32, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos
        x = self.norm1(x + self.attn(x))
        x = self.norm2(x + self.ff2(F.gelu(self.ff1(x))))
        return self.head(x.mean(1))


class EncoderLayer(nn.Module):
    """A post-norm (BERT) or pre-norm (ViT) transformer encoder layer."""

    def __init__(self, dim: int, heads: int, hidden: int, pre_norm: bool) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, hidden)
        self.ff2 = nn.Linear(hidden, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            return x + self.ff2(F.gelu(self.ff1(self.norm2(x))))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.ff2(F.gelu(self.ff1(x))))


class BertLike(nn.Module):
    """Token and position embeddings, two post-norm encoder layers, a pooler and a classifier."""

    def __init__(self, vocab: int = 40, dim: int = 32, heads: int = 4, seq: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, seq, dim) * 0.1)
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.Sequential(
            EncoderLayer(dim, heads, 64, pre_norm=False), EncoderLayer(dim, heads, 64, pre_norm=False)
        )
        self.pooler = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.norm(self.embed(ids) + self.pos))
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


class WidthFromInputAttention(Attention):
    """Attention whose head width and merged width come from its input, as traced code computes them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.heads, d // self.heads).permute(0, 2, 1, 3)
        k = self.k(x).view(b, t, self.heads, d // self.heads).permute(0, 2, 1, 3)
        v = self.v(x).view(b, t, self.heads, d // self.heads).permute(0, 2, 1, 3)
        scores = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        return self.o((scores @ v).permute(0, 2, 1, 3).reshape(b, t, d))


class PreNormEncoder(nn.Module):
    """Token embedding, a position table sliced to the sequence, pre-norm layers, mean pooling."""

    def __init__(self, vocab: int = 40, dim: int = 64, heads: int = 4, seq: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, seq, dim) * 0.1)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, 2 * dim, pre_norm=True) for _ in range(2))
        for layer in self.layers:
            layer.attn = WidthFromInputAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.classifier(self.norm(x).mean(1))


class ViTLike(nn.Module):
    """Patch embedding (strided conv), a class token, positions, two pre-norm encoder layers."""

    def __init__(self, dim: int = 32, heads: int = 4, patch: int = 8, size: int = 32) -> None:
        super().__init__()
        tokens = (size // patch) ** 2 + 1
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.1)
        self.layers = nn.Sequential(
            EncoderLayer(dim, heads, 64, pre_norm=True), EncoderLayer(dim, heads, 64, pre_norm=True)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.patch(x).flatten(2).transpose(1, 2)
        y = torch.cat([self.cls.expand(y.shape[0], -1, -1), y], 1) + self.pos
        y = self.norm(self.layers(y))
        return self.head(y[:, 0])


class TorchViT(nn.Module):
    """A ViT built from torch's own layers (``nn.TransformerEncoderLayer`` post- and pre-norm,
    ``nn.MultiheadAttention``): traced in eval mode without gradients it records their fused fast
    paths (``aten::_transformer_encoder_layer_fwd``, ``aten::_native_multi_head_attention``)."""

    def __init__(self, dim: int = 32, heads: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, dim, 8, 8)
        self.position = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
        self.block1 = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True)
        self.block2 = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2) + self.position
        tokens = self.block2(self.block1(tokens))
        tokens = tokens + self.attn(tokens, tokens, tokens, need_weights=False)[0]
        return self.head(tokens.mean(1))
