"""PruneKit's reference zoo: small architectures registered as ``zoo:*``, one module per family.

Each model here stands for one structural pattern the pruning engine has to handle (residual adds,
depthwise and grouped convolutions, channel concatenation, squeeze-excite gating, fused attention
projections, ``nn.MultiheadAttention``, encoder/decoder skips, 1-D and 3-D convolutions, recurrent
layers, free-standing per-channel parameters, ...).  They are what the tests, the benchmarks and the
service's "build from a name" path use, so they obey a few rules:

* small and fast: a forward pass at batch 2 takes milliseconds and no model has more than ~2M
  parameters; weights are randomly initialised (nothing is downloaded);
* capturable: every model runs in eval mode, traces with ``torch.jit.trace``, exports with
  ``torch.export.export`` with a dynamic batch dimension, and scripts with ``torch.jit.script``
  unless registered with ``scriptable=False``;
* prunable: ``forward`` never hard-codes a width that ``__init__`` chose (it uses ``-1`` or tensor
  shapes instead; the number of attention heads is the one exception), so a model keeps working
  after the engine has shrunk its channels;
* torchvision-like parameter names (``layer1.1.conv1.weight``, ``features.denseblock1...``, ...),
  so specs and tests can address layers by familiar names.

Each factory takes no arguments and returns a fresh ``nn.Module``; the registry puts it in eval mode.

Families (module: registered names, what each stands for):

==================  ==============================  ==============================================
module              names                           pattern
==================  ==============================  ==============================================
``resnets``         ``zoo:resnet_mini``             residual adds, strided 1x1 conv+BN shortcut
                    ``zoo:se_net``                  squeeze-excite gates (1x1 convs and Linears)
                    ``zoo:resnext_mini``            grouped (not depthwise) 3x3 convs
``mobile``          ``zoo:mobilenetv2_mini``        inverted residuals, depthwise convs, ReLU6
``densenet``        ``zoo:densenet_mini``           ``torch.cat`` of all earlier features
``attention``       ``zoo:vit_mini``                patch embedding, cls/pos Parameters, fused qkv
                    ``zoo:mha_transformer``         ``nn.MultiheadAttention``, LayerNorm, FFN
``unet``            ``zoo:unet_mini``               encoder/decoder, transposed conv, cat skips
``conv_nd``         ``zoo:conv1d_net``              1-D convs, BatchNorm1d, residual add
                    ``zoo:conv3d_net``              3-D convs, BatchNorm3d
``mlp``             ``zoo:mlp``                     Linear/ReLU stack, mixed bias (torch.ao's example)
``custom``          ``zoo:custom_scale_layer``      a user module's free per-channel Parameters
``recurrent``       ``zoo:gru_classifier``          ``nn.GRU`` between Linears
==================  ==============================  ==============================================

Renamed for one release (the old names still resolve, see ``prunekit.registry.list_aliases``, and
are not listed by ``prunekit architectures``): ``zoo:mlp_seed001`` -> ``zoo:mlp``,
``zoo:custom_layer_seed002`` -> ``zoo:custom_scale_layer``, ``zoo:gru_seed000`` ->
``zoo:gru_classifier``; likewise the factories ``mlp_seed001``, ``custom_layer_seed002``,
``gru_seed000`` and the class ``MLPSeed001`` (now ``MLPNet``) stay importable from here.

Importing this package registers every family; ``from prunekit.zoo import resnet_mini`` (any
factory or model class) keeps working.
"""

from .attention import (
    Attention, MHAEncoderLayer, MHATransformer, Mlp, PatchEmbed, TransformerBlock, ViTMini,
    mha_transformer, vit_mini,
)
from .conv_nd import Conv1dNet, Conv3dNet, conv1d_net, conv3d_net
from .custom import CustomizedLayer, FullyConnectedNet, custom_layer_seed002, custom_scale_layer
from .densenet import DenseBlock, DenseLayer, DenseNetMini, Transition, densenet_mini
from .mlp import MLPNet, MLPSeed001, mlp, mlp_seed001
from .mobile import ConvBNReLU6, InvertedResidual, MobileNetV2Mini, mobilenetv2_mini
from .recurrent import GRUNet, gru_classifier, gru_seed000
from .resnets import (
    BasicBlock, ResNeXtBottleneck, ResNeXtMini, ResNetMini, SEBasicBlock, SENet, SqueezeExcite,
    resnet_mini, resnext_mini, se_net,
)
from .unet import DoubleConv, UNetMini, unet_mini

__all__ = [
    # factories, by registered name
    "resnet_mini", "se_net", "resnext_mini", "mobilenetv2_mini", "densenet_mini", "vit_mini",
    "mha_transformer", "unet_mini", "conv1d_net", "conv3d_net", "mlp", "custom_scale_layer",
    "gru_classifier",
    # model classes and their building blocks
    "BasicBlock", "ResNetMini", "SqueezeExcite", "SEBasicBlock", "SENet", "ResNeXtBottleneck",
    "ResNeXtMini", "ConvBNReLU6", "InvertedResidual", "MobileNetV2Mini", "DenseLayer",
    "DenseBlock", "Transition", "DenseNetMini", "PatchEmbed", "Attention", "Mlp",
    "TransformerBlock", "ViTMini", "MHAEncoderLayer", "MHATransformer", "DoubleConv", "UNetMini",
    "Conv1dNet", "Conv3dNet", "MLPNet", "CustomizedLayer", "FullyConnectedNet", "GRUNet",
    # former names, for one release
    "mlp_seed001", "custom_layer_seed002", "gru_seed000", "MLPSeed001",
]
