"""The built-in registry entries (one per paper model) and their default/tiny presets."""

from __future__ import annotations

from gazeprep.train.models import EGD_CLASSES, REFLACX_LABELS, ModelInputs, ModelSpec, register

TINY_TRAIN = {"epochs": 8, "batch_size": 8, "lr": 3e-3, "optimizer": "adam", "progress": False, "recalibrate_bn": True}


def _labels(data: dict, default: list[str]) -> list[str]:
    return list(data.get("labels") or default)


# -- 002 GG-CAM --------------------------------------------------------------------------------
def _ggcam(model: dict, data: dict):
    from gazeprep.train.models.ggcam import GGCAM

    return GGCAM(class_names=_labels(data, EGD_CLASSES), **model)


def _ggcam_obj(loss: dict):
    from gazeprep.train.models.ggcam import GGCAMObjective

    return GGCAMObjective(**loss)


for _name, _bb, _sigma, _lr in (("ggcam-resnet50", "resnet50", 2e-9, 7e-3), ("ggcam-efficientnetv2s", "tf_efficientnetv2_s", 1.4e-11, 6e-3)):
    register(ModelSpec(
        _name, "002", f"GG-CAM on {_bb}: CAM layer, selective MSE on sigmoid(alpha*CAM), eq. 11 weighting",
        _ggcam, _ggcam_obj,
        presets={
            # Table 1 of paper 002: lr, sigma_sm init; Adam; inputs as EGD-CXR 640 x 512 letterboxed to 640
            "default": {"model": {"backbone": _bb}, "loss": {"sigma_sm": _sigma, "sigma_ce": 1.0},
                        "data": {"size": 640, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                        "train": {"epochs": 200, "batch_size": 8, "lr": _lr, "optimizer": "adam"}},
            "tiny": {"model": {"backbone": "test_resnet" if "resnet" in _bb else "test_efficientnet", "backbone_kwargs": {"output_stride": 8}},
                     "loss": {"sigma_sm": 0.5, "sigma_ce": 1.0},
                     "data": {"size": 64, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                     "train": dict(TINY_TRAIN)},
        },
        # GG-CAM's maps are MT-UNet's gaze-sample heatmaps (REFERENCE_CODE 1c); one class per image
        inputs=ModelInputs("egd-cxr", "egd-gaze-samples-max"),
    ))


# -- 003 Karargyris U-Net ----------------------------------------------------------------------
def _karargyris(model: dict, data: dict):
    from gazeprep.train.models.karargyris import KarargyrisUNet

    return KarargyrisUNet(class_names=_labels(data, EGD_CLASSES), map_names=list(data.get("targets") or ["full"])[:1], **model)


def _karargyris_obj(loss: dict):
    from gazeprep.train.models.karargyris import KarargyrisObjective

    return KarargyrisObjective(**loss)


register(ModelSpec(
    "karargyris-unet", "003", "EfficientNet-b0 U-Net + classification head; BCE heatmap loss or guided-backprop/deconvnet sets 1-3",
    _karargyris, _karargyris_obj,
    presets={
        "default": {"model": {"encoder": "efficientnet-b0"}, "loss": {"variant": "baseline", "generator": "guided"},
                    "data": {"size": 224, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                    "train": {"epochs": 50, "batch_size": 16, "lr": 1e-3, "optimizer": "adam"}},
        "tiny": {"model": {"encoder": "tu-test_efficientnet", "encoder_depth": 4, "decoder_channels": [32, 16, 16, 8]},
                 "loss": {"variant": "baseline"},
                 "data": {"size": 64, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                 "train": dict(TINY_TRAIN)},
    },
    # the EGD-CXR static heatmaps; the classification head is trained with BCE (sigmoid scores)
    inputs=ModelInputs("egd-cxr", "egd-static", multilabel=True),
))


# -- 004 Lanfredi MIL --------------------------------------------------------------------------
def _lanfredi(model: dict, data: dict):
    from gazeprep.train.models.lanfredi import LanfrediMIL

    return LanfrediMIL(label_names=_labels(data, REFLACX_LABELS), **model)


def _lanfredi_obj(loss: dict):
    from gazeprep.train.models.lanfredi import LanfrediObjective

    return LanfrediObjective(**loss)


register(ModelSpec(
    "lanfredi-mil", "004", "ResNet-50 multi-resolution 32x32 grid, MIL loss with BRN, decoder loss (eq. 6), weak MIMIC labels",
    _lanfredi, _lanfredi_obj,
    presets={
        # section 2.8: 512 px letterbox, AMSGrad lr 1e-3, wd 1e-5, batch 20, 60 epochs, lambda_A 3, lambda_T 300
        "default": {"model": {"backbone": "resnet50", "hidden": 512}, "loss": {"lambda_a": 3.0, "lambda_t": 300.0, "threshold": 0.15},
                    "data": {"size": 512, "labels": REFLACX_LABELS, "targets": REFLACX_LABELS,
                             "augment": {"rotation_deg": 45, "translation": 0.15, "scale": 0.15}},
                    "train": {"epochs": 60, "batch_size": 20, "lr": 1e-3, "weight_decay": 1e-5, "optimizer": "amsgrad"}},
        "tiny": {"model": {"backbone": "test_resnet", "hidden": 16}, "loss": {"lambda_a": 3.0, "lambda_t": 10.0, "threshold": 0.15},
                 "data": {"size": 64, "augment": None},
                 "train": dict(TINY_TRAIN, optimizer="amsgrad")},
    },
    inputs=ModelInputs("reflacx", "reflacx-label-specific", multilabel=True, maps_per_label=True),
))


# -- 001 Qiu dual-encoder Res-SE-UNet ----------------------------------------------------------
def _qiu(model: dict, data: dict):
    from gazeprep.train.models.qiu import QiuDualUNet

    return QiuDualUNet(class_names=_labels(data, EGD_CLASSES), **model)


def _qiu_obj(loss: dict):
    from gazeprep.train.models.qiu import QiuObjective

    return QiuObjective(**loss)


register(ModelSpec(
    "qiu-dual-unet", "001", "Res-SE-UNet + frozen DenseNet-201, KL saliency loss, three-stage cooperative training",
    _qiu, _qiu_obj,
    presets={
        # section 4.3.5: Adam lr 1e-4, 50 epochs per stage; 640 x 512 inputs letterboxed to 640
        "default": {"model": {"densenet": "densenet201", "width": 32}, "loss": {"margin": 1.0},
                    "data": {"size": 640, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                    "train": {"epochs": 50, "batch_size": 8, "lr": 1e-4, "optimizer": "adam"}},
        "tiny": {"model": {"densenet": "tiny", "width": 8}, "loss": {"margin": 1.0},
                 "data": {"size": 64, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                 "train": dict(TINY_TRAIN, epochs=5)},
    },
    inputs=ModelInputs("egd-cxr", "egd-gaze-samples-max"),  # run at [320, 256], stride 10 as Qiu's code
))


# -- 000 I-AI adapter + masked classifier ------------------------------------------------------
def _iai(model: dict, data: dict):
    from gazeprep.train.models.iai import IAIModel

    return IAIModel(class_names=_labels(data, EGD_CLASSES), map_names=list(data.get("targets") or ["full"]), **model)


def _iai_obj(loss: dict):
    from gazeprep.train.models.iai import IAIObjective

    return IAIObjective(**loss)


register(ModelSpec(
    "iai-adapter", "000", "adapter ViT fused with frozen BiomedCLIP at stem/3/6/9, scaling vector, intensity decoder; masked classifier",
    _iai, _iai_obj,
    presets={
        # section 3.3 implementation details: 8-layer adapter, D 240, 6 heads, AdamW lr 1e-4, batch 16, 224 px
        "default": {"model": {"clip": "biomedclip", "clip_dir": None, "adapter_dim": 240, "adapter_depth": 8, "adapter_heads": 6, "mlp_hidden": 256},
                    "loss": {"lambdas": [1.0, 1.0, 1.0]},
                    "data": {"size": 224, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                    "train": {"epochs": 50, "batch_size": 16, "lr": 1e-4, "optimizer": "adamw"}},
        "tiny": {"model": {"clip": "tiny", "adapter_dim": 48, "adapter_depth": 4, "adapter_heads": 4, "mlp_hidden": 32, "image_size": 64,
                           "finetune_classifier_encoder": False, "classifier_norm": True},
                 "loss": {"lambdas": [1.0, 1.0, 1.0]},
                 "data": {"size": 64, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                 # no BN recalibration: the only batch norm (classifier_norm) sits behind the frozen encoder and
                 # averages its statistics over all training batches, also when the objective masks with targets
                 "train": dict(TINY_TRAIN, epochs=6, stage_lr={"classifier": 1e-2}, recalibrate_bn=False)},
    },
    # what the presets above train on (a "full" map and EGD-CXR's classes); the paper's anatomy
    # targets come from reflacx-anatomy: change this together with the presets
    inputs=ModelInputs("egd-cxr", "egd-static"),
))


# -- Grad-CAM family baselines -----------------------------------------------------------------
def _gradcam(model: dict, data: dict):
    from gazeprep.train.models.gradcam import CAMBaseline

    return CAMBaseline(class_names=_labels(data, EGD_CLASSES), **model)


def _gradcam_obj(loss: dict):
    from gazeprep.train.models.gradcam import ClassifierObjective

    return ClassifierObjective(**loss)


register(ModelSpec(
    "gradcam-baseline", "001/003", "plain CNN classifier explained post hoc with pytorch-grad-cam (GradCAM, GradCAM++, XGradCAM, EigenCAM, ...)",
    _gradcam, _gradcam_obj,
    presets={
        "default": {"model": {"backbone": "resnet50", "method": "gradcam"}, "loss": {},
                    "data": {"size": 224, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                    "train": {"epochs": 50, "batch_size": 16, "lr": 1e-4, "optimizer": "adam"}},
        "tiny": {"model": {"backbone": "test_resnet", "method": "gradcam"}, "loss": {},
                 "data": {"size": 64, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                 "train": dict(TINY_TRAIN)},
    },
    inputs=ModelInputs("egd-cxr", "egd-static", needs_maps=False),  # maps only for evaluation
))
