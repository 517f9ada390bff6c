"""The networks tools/bench.py compares, each described once and built on both sides: the
model block of a dnnspec spec, and the same layers as a PyTorch `nn.Module` (shapes,
layers and parameter counts match; initialisation need not).

A description travels to tools/bench_torch.py's process as JSON (`net_config`,
`net_from_config`), so this module imports nothing from dnnspec, and torch only when a
module is built: the PyTorch process costs what a PyTorch user's would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

LR = {"sgd": 0.01, "adam": 0.001}
"""The learning rate of each optimizer, both frameworks."""


@dataclass(frozen=True)
class Mlp:
    """Dense layers of `widths` with ReLU between them, dropout after the first hidden
    layer when `dropout` > 0."""

    widths: tuple[int, ...]
    dropout: float = 0.0
    kind: ClassVar[str] = "mlp"

    @property
    def sample(self) -> tuple[str, tuple[int, ...]]:
        """One sample's input dtype and shape."""
        return "float32", (self.widths[0],)

    @property
    def classes(self) -> int:
        return self.widths[-1]

    def model(self) -> str:
        hidden = [f"  dense({w}) -> relu" for w in self.widths[1:-1]]
        if self.dropout:
            hidden[0] += f" -> dropout({self.dropout})"
        return (
            f"model bench {{\n  input x: float32[N, {self.widths[0]}]\n"
            + "\n".join(hidden)
            + f"\n  dense({self.widths[-1]})\n}}\n"
        )

    def module(self) -> Any:
        import torch

        layers: list[torch.nn.Module] = []
        for i, (a, b) in enumerate(zip(self.widths[:-2], self.widths[1:-1], strict=True)):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
            if self.dropout and i == 0:
                layers.append(torch.nn.Dropout(self.dropout))
        return torch.nn.Sequential(*layers, torch.nn.Linear(self.widths[-2], self.widths[-1]))


@dataclass(frozen=True)
class Cnn:
    """`side` x `side` single-channel images, 3x3 `same` convolutions of `channels` filters
    (each followed by batchnorm when `norm`, then ReLU), a 2x2 max pool after the
    convolutions numbered in `pool_after`, flatten, dense(10)."""

    side: int
    channels: tuple[int, ...]
    pool_after: tuple[int, ...]
    norm: bool
    kind: ClassVar[str] = "cnn"

    @property
    def sample(self) -> tuple[str, tuple[int, ...]]:
        return "float32", (1, self.side, self.side)

    @property
    def classes(self) -> int:
        return 10

    def model(self) -> str:
        lines = [f"  input x: float32[N, 1, {self.side}, {self.side}]"]
        bias = str(not self.norm).lower()
        for i, width in enumerate(self.channels):
            norm = " -> batchnorm" if self.norm else ""
            lines.append(f"  conv2d({width}, 3, padding = same, bias = {bias}){norm} -> relu")
            if i in self.pool_after:
                lines.append("  max_pool2d(2)")
        lines += ["  flatten", "  dense(10)"]
        return "model bench {\n" + "\n".join(lines) + "\n}\n"

    def module(self) -> Any:
        import torch

        layers: list[torch.nn.Module] = []
        side, channels = self.side, 1
        for i, width in enumerate(self.channels):
            layers.append(torch.nn.Conv2d(channels, width, 3, padding=1, bias=not self.norm))
            if self.norm:
                layers.append(torch.nn.BatchNorm2d(width))
            layers.append(torch.nn.ReLU())
            if i in self.pool_after:
                layers.append(torch.nn.MaxPool2d(2))
                side //= 2
            channels = width
        layers += [torch.nn.Flatten(), torch.nn.Linear(channels * side * side, 10)]
        return torch.nn.Sequential(*layers)


@dataclass(frozen=True)
class Lstm:
    """lstm(units) over [N, steps, features] (the last step's output) -> dense(10);
    `symbolic` declares T as a name, so the loop is a Scan whatever the length (as it is
    for `steps` above the unrolling limit)."""

    steps: int
    features: int
    units: int
    symbolic: bool = False
    kind: ClassVar[str] = "lstm"

    @property
    def sample(self) -> tuple[str, tuple[int, ...]]:
        return "float32", (self.steps, self.features)

    @property
    def classes(self) -> int:
        return 10

    def model(self) -> str:
        t = "T" if self.symbolic else str(self.steps)
        return (
            f"model bench {{\n  input x: float32[N, {t}, {self.features}]\n"
            f"  lstm({self.units})\n  dense(10)\n}}\n"
        )

    def module(self) -> Any:
        from torch import nn

        features, units = self.features, self.units

        class LastStep(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = nn.LSTM(features, units, batch_first=True)
                self.head = nn.Linear(units, 10)

            def forward(self, x: Any) -> Any:
                out, _ = self.lstm(x)
                return self.head(out[:, -1])

        return LastStep()


@dataclass(frozen=True)
class CharTransformer:
    """specs/char_transformer.dnn's network: embedding and learned positions, `layers`
    pre-norm causal transformer layers (`heads` heads, feed-forward 4 d, ReLU, no dropout),
    layer_norm, dense(vocab) at every position. PyTorch's module returns the logits as
    [N * context, vocab], so the targets are flattened to match."""

    d: int = 64
    heads: int = 4
    layers: int = 2
    vocab: int = 29
    context: int = 64
    kind: ClassVar[str] = "char_transformer"

    @property
    def sample(self) -> tuple[str, tuple[int, ...]]:
        return "int64", (self.context,)

    @property
    def classes(self) -> int:
        return self.vocab

    def model(self) -> str:
        d = self.d
        return (
            "import transformer\n\nmodel bench {\n"
            f"  input x: int64[N, {self.context}]\n"
            f"  embedding({self.vocab}, {d}) -> positional(learned, max_len = {self.context})\n"
            f"  repeat {self.layers} {{\n"
            f"    causal_transformer({d}, {self.heads}, {4 * d}, p = 0.0)\n  }}\n"
            f"  layer_norm -> dense({self.vocab})\n}}\n"
        )

    def module(self) -> Any:
        import torch
        from torch import nn

        d, heads, vocab, t = self.d, self.heads, self.vocab, self.context

        class Layer(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
                self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
                self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d))
                self.register_buffer("mask", torch.triu(torch.ones(t, t, dtype=torch.bool), 1))

            def forward(self, x: Any) -> Any:
                h = self.norm1(x)
                x = x + self.attn(h, h, h, attn_mask=self.mask, need_weights=False)[0]
                return x + self.ff(self.norm2(x))

        layers = self.layers

        class Model(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = nn.Embedding(vocab, d)
                self.pos = nn.Parameter(torch.randn(t, d) * 0.02)
                self.layers = nn.Sequential(*[Layer() for _ in range(layers)])
                self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, vocab))

            def forward(self, ids: Any) -> Any:
                return self.head(self.layers(self.embed(ids) + self.pos)).reshape(-1, vocab)

        return Model()


Net = Mlp | Cnn | Lstm | CharTransformer
NETS: dict[str, type[Net]] = {n.kind: n for n in (Mlp, Cnn, Lstm, CharTransformer)}


def net_config(net: Net) -> dict[str, Any]:
    """The description as JSON-ready data, `kind` naming its class."""
    return {"kind": net.kind, **asdict(net)}


def net_from_config(data: dict[str, Any]) -> Net:
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "kind"
    }
    return NETS[data["kind"]](**fields)


def spec_text(
    net: Net, data: str, optimizer: str, batch: int, epochs: int = 1, metrics: bool = True
) -> str:
    """A whole spec: `net`'s model block and a train section (cross-entropy, `optimizer`
    at its `LR`, seed 0, accuracy when `metrics`)."""
    return (
        f"{net.model()}\ntrain {{\n  data {data}\n  loss cross_entropy\n"
        f"  optimizer {optimizer}(lr = {LR[optimizer]})\n  batch {batch}\n  epochs {epochs}\n"
        + ("  metrics accuracy\n" if metrics else "")
        + "  seed 0\n}\n"
    )
