"""Small Keras and PaddlePaddle models exported to ONNX the way their users export them: the fixtures of
tests/service/pipeline/test_framework_exports.py.

TensorFlow and Paddle are large and pin their own protobuf, so this runs in a virtual environment of its
own, never prunekit's (the ONNX files it writes are checked in)::

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu tf2onnx
    /tmp/tfenv/bin/python scripts/framework_fixtures.py keras tests/fixtures/frameworks
    python -m venv /tmp/pdenv && /tmp/pdenv/bin/pip install paddlepaddle paddle2onnx packaging
    /tmp/pdenv/bin/python scripts/framework_fixtures.py paddle tests/fixtures/frameworks

Keras models are NHWC: tf2onnx wraps the convolutions in Transposes, which is what the converter and
channel pruning must see through. Weights are random with fixed seeds (BatchNorm statistics too, so
folding them is not a no-op); the files are under 100 KiB each.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SEED = 7


def _keras_cnn(keras: Any) -> Any:
    """Residual convs, a depthwise-separable block with squeeze-excitation, pooling and a Dense head."""
    layers = keras.layers
    x = inputs = keras.Input((32, 32, 3), batch_size=1, name="image")
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(x)))
    skip = x
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(x)))
    x = layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(x))
    x = layers.ReLU()(layers.Add()([x, skip]))
    x = layers.ReLU()(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(x)))
    x = layers.ReLU()(layers.Conv2D(32, 1)(x))
    squeeze = layers.GlobalAveragePooling2D()(x)
    squeeze = layers.Dense(8, activation="relu")(squeeze)
    squeeze = layers.Dense(32, activation="sigmoid")(squeeze)
    x = layers.Multiply()([x, layers.Reshape((1, 1, 32))(squeeze)])
    x = layers.MaxPooling2D()(x)
    x = layers.ReLU()(layers.Conv2D(48, 3, padding="same")(x))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, name="logits")(x))


def _keras_mlp(keras: Any) -> Any:
    """Dense -> Dense -> Dense with a LayerNormalization between: NEURON's Linear chains."""
    layers = keras.layers
    x = inputs = keras.Input((64,), batch_size=4, name="features")
    x = layers.Dense(128, activation="relu")(x)
    x = layers.LayerNormalization()(x)
    x = layers.Dense(96, activation="swish")(x)
    return keras.Model(inputs, layers.Dense(10, name="logits")(x))


def _randomize_batchnorm(model: Any, numpy: Any) -> None:
    rng = numpy.random.default_rng(SEED)
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                    rng.normal(0, 0.1, beta.shape).astype("float32"),
                    rng.normal(0, 0.1, mean.shape).astype("float32"),
                    rng.uniform(0.5, 1.5, var.shape).astype("float32"),
                ]
            )


def keras_fixtures(out: Path) -> None:
    import numpy
    import tensorflow as tf
    import tf2onnx

    tf.random.set_seed(SEED)
    keras = tf.keras
    for name, build in (("keras_cnn", _keras_cnn), ("keras_mlp", _keras_mlp)):
        model = build(keras)
        _randomize_batchnorm(model, numpy)
        spec = [tf.TensorSpec(i.shape, tf.float32, name=i.name) for i in model.inputs]
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
        (out / f"{name}.onnx").write_bytes(proto.SerializeToString())
        print(f"wrote {out / f'{name}.onnx'} (tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__})")


def paddle_fixtures(out: Path) -> None:
    import paddle
    from paddle import nn

    paddle.seed(SEED)

    class Net(nn.Layer):  # type: ignore[misc]
        """A ResNet-like stem and block, an inception-style concat, and a pooled Linear head."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2D(3, 16, 3, padding=1), nn.BatchNorm2D(16), nn.ReLU())
            conv = nn.Conv2D
            self.block = nn.Sequential(
                conv(16, 16, 3, padding=1), nn.BatchNorm2D(16), nn.ReLU(), conv(16, 16, 3, padding=1)
            )
            self.left = nn.Conv2D(16, 24, 1)
            self.right = nn.Sequential(nn.Conv2D(16, 8, 1), nn.ReLU(), nn.Conv2D(8, 24, 3, padding=1))
            self.pool = nn.AdaptiveAvgPool2D(1)
            self.head = nn.Linear(48, 10)

        def forward(self, x: Any) -> Any:
            x = self.stem(x)
            x = nn.functional.relu(self.block(x) + x)
            x = nn.functional.max_pool2d(x, 2)
            x = paddle.concat([self.left(x), self.right(x)], axis=1)
            return self.head(paddle.flatten(self.pool(x), 1))

    net = Net()
    for layer in net.sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            layer._mean.set_value(paddle.randn(layer._mean.shape) * 0.1)
            layer._variance.set_value(paddle.rand(layer._variance.shape) + 0.5)
    net.eval()
    spec = [paddle.static.InputSpec([1, 3, 32, 32], "float32", "x")]
    prefix = out / "paddle_cnn"
    paddle.onnx.export(net, str(prefix), input_spec=spec, opset_version=13)
    print(f"wrote {prefix}.onnx (paddle {paddle.__version__})")


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("keras", "paddle"):
        raise SystemExit("usage: framework_fixtures.py keras|paddle OUT_DIR")
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    (keras_fixtures if sys.argv[1] == "keras" else paddle_fixtures)(out)


if __name__ == "__main__":
    main()
