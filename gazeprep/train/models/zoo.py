"""The built-in registry entries (one per paper model) and their default/tiny presets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gazeprep.train.models.registry import EGD_CLASSES, REFLACX_LABELS, ModelInputs, ModelSpec, register

if TYPE_CHECKING:  # the builders import their model module only when a model is built
    from gazeprep.train.models.ggcam import GGCAM, GGCAMObjective
    from gazeprep.train.models.gradcam import CAMBaseline, ClassifierObjective
    from gazeprep.train.models.iai import IAIModel, IAIObjective
    from gazeprep.train.models.karargyris import KarargyrisObjective, KarargyrisUNet
    from gazeprep.train.models.lanfredi import LanfrediMIL, LanfrediObjective
    from gazeprep.train.models.qiu import QiuDualUNet, QiuObjective

TINY_TRAIN = {"epochs": 8, "batch_size": 8, "lr": 3e-3, "optimizer": "adam", "progress": False, "recalibrate_bn": True}


def _labels(data: dict, default: list[str]) -> list[str]:
    return list(data.get("labels") or default)


# -- 002 GG-CAM --------------------------------------------------------------------------------
def _ggcam(model: dict, data: dict) -> GGCAM:
    from gazeprep.train.models.ggcam import GGCAM

    return GGCAM(class_names=_labels(data, EGD_CLASSES), **model)


def _ggcam_obj(loss: dict) -> GGCAMObjective:
    from gazeprep.train.models.ggcam import GGCAMObjective

    return GGCAMObjective(**loss)


#: GG-CAM's training protocol, as its code runs it (hz-zhu/GG-CAM ResNet+GG-CAM/RNetCAM.py,
#: EffNet+GG-CAM/ENetCAM.py, my_learn.py NetLearn): Adam, batch 4, at most 1024 epochs;
#: ReduceLROnPlateau(min, x0.1, patience 40, eps 0) on the validation loss, the best weights (lowest
#: validation loss) reloaded at every drop and kept at the end; stop after 2 * 40 + 3 epochs without
#: improvement or once the learning rate is below 1e-8. docs/trainer.md lists paper vs code vs here.
def _ggcam_train(lr: float) -> dict:
    return {
        "epochs": 1024,
        "batch_size": 4,
        "lr": lr,
        "optimizer": "adam",
        "scheduler": {"kind": "plateau", "factor": 0.1, "patience": 40, "eps": 0.0, "reload_best": True},
        "monitor": "val_loss",
        "select_best": True,
        "early_stop_patience": 83,
        "stop_lr": 1e-8,
    }


# (name, backbone, code lr, code lg_sigma_d): RNetCAM.py lr 5e-3, lg_sigma_d -23; ENetCAM.py 6e-3, -16
for _name, _bb, _lr, _lg_sm in (
    ("ggcam-resnet50", "resnet50", 5e-3, -23.0),
    ("ggcam-efficientnetv2s", "tf_efficientnetv2_s", 6e-3, -16.0),
):
    register(
        ModelSpec(
            _name,
            "002",
            f"GG-CAM on {_bb}: CAM layer, selective MSE on sigmoid(alpha*CAM), eq. 11 weighting",
            _ggcam,
            _ggcam_obj,
            presets={
                # the code's input: the DICOM centre-padded to 3072 x 2560, every 2nd pixel (1536 x 1280, CAM 48 x 40),
                # divided by its max; random init; log-parametrised sigmas (lg_sigma_c 7) and alpha (lg_scale 0)
                "default": {
                    "model": {
                        "backbone": _bb,
                        "cam_reduce": "mean",
                        "log_alpha": True,
                        "alpha_init": 1.0,
                        "input_norm": "max",
                    },
                    "loss": {"lg_sigma_sm": _lg_sm, "lg_sigma_ce": 7.0},
                    "data": {
                        "size": [1536, 1280],
                        "fit": "pad_crop_stride",
                        "stride": 2,
                        "targets": ["full"],
                        "labels": EGD_CLASSES,
                        "augment": None,
                    },
                    "train": _ggcam_train(_lr),
                },
                "tiny": {
                    "model": {
                        "backbone": "test_resnet" if "resnet" in _bb else "test_efficientnet",
                        "backbone_kwargs": {"output_stride": 8},
                    },
                    "loss": {"sigma_sm": 0.5, "sigma_ce": 1.0},
                    "data": {"size": 64, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                    "train": dict(TINY_TRAIN),
                },
            },
            # GG-CAM's maps are MT-UNet's gaze-sample heatmaps (REFERENCE_CODE 1c); one class per image
            inputs=ModelInputs("egd-cxr", "egd-gaze-samples-max"),
        )
    )


# -- 003 Karargyris U-Net ----------------------------------------------------------------------
def _karargyris(model: dict, data: dict) -> KarargyrisUNet:
    from gazeprep.train.models.karargyris import KarargyrisUNet

    return KarargyrisUNet(
        class_names=_labels(data, EGD_CLASSES), map_names=list(data.get("targets") or ["full"])[:1], **model
    )


def _karargyris_obj(loss: dict) -> KarargyrisObjective:
    from gazeprep.train.models.karargyris import KarargyrisObjective

    return KarargyrisObjective(**loss)


register(
    ModelSpec(
        "karargyris-unet",
        "003",
        "EfficientNet-b0 U-Net + classification head; BCE heatmap loss or guided-backprop/deconvnet sets 1-3",
        _karargyris,
        _karargyris_obj,
        presets={
            # EGD-CXR's U-Net run (cxr-eye-gaze/eye-gaze-dataset Experiments/README.md: main_Unet.py --model_type unet
            # --dropout 0.5 --epochs 35 --gamma 0.41731 --lr 0.0090552 --model_teacher timm-efficientnet-b0 --step_size 2
            # --scheduler --resize 224 --batch_size 32): Resize((224, 224)) (aspect not kept), ImageNet normalisation,
            # Adam, 003's cyclical LambdaLR (its lr doubles as the minimum factor), clip_grad_value_ 0.1, best epoch by
            # mean AUC (the code ranks epochs on the test set; here on the validation split)
            "default": {
                "model": {"encoder": "timm-efficientnet-b0", "dropout": 0.5, "input_norm": "imagenet"},
                "loss": {
                    "variant": "baseline",
                    "generator": "guided",
                    "class_weight": 0.41731,
                    "seg_weight": 1 - 0.41731,
                },
                "data": {
                    "size": 224,
                    "fit": "stretch",
                    "targets": ["full"],
                    "labels": EGD_CLASSES,
                    "augment": None,
                    "split_fractions": [0.8, 0.1, 0.1],
                },
                "train": {
                    "epochs": 35,
                    "batch_size": 32,
                    "lr": 0.0090552,
                    "optimizer": "adam",
                    "scheduler": {"kind": "cyclic", "step_size": 2, "min_factor": 0.0090552, "max_factor": 1.0},
                    "grad_clip_value": 0.1,
                    "monitor": "val_auc_mean",
                    "select_best": True,
                },
            },
            "tiny": {
                "model": {
                    "encoder": "tu-test_efficientnet",
                    "encoder_depth": 4,
                    "decoder_channels": [32, 16, 16, 8],
                    "input_norm": "none",
                },
                "loss": {"variant": "baseline"},
                "data": {"size": 64, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                "train": dict(TINY_TRAIN),
            },
        },
        # the EGD-CXR static heatmaps; the classification head is trained with BCE (sigmoid scores)
        inputs=ModelInputs("egd-cxr", "egd-static", multilabel=True),
    )
)


# -- 004 Lanfredi MIL --------------------------------------------------------------------------
def _lanfredi(model: dict, data: dict) -> LanfrediMIL:
    from gazeprep.train.models.lanfredi import LanfrediMIL

    return LanfrediMIL(label_names=_labels(data, REFLACX_LABELS), **model)


def _lanfredi_obj(loss: dict) -> LanfrediObjective:
    from gazeprep.train.models.lanfredi import LanfrediObjective

    return LanfrediObjective(**loss)


register(
    ModelSpec(
        "lanfredi-mil",
        "004",
        "ResNet-50 multi-resolution 32x32 grid, MIL loss with BRN, decoder loss (eq. 6), weak MIMIC labels",
        _lanfredi,
        _lanfredi_obj,
        presets={
            # section 2.8 and the README's command of the ET model (src.train --last_layer 3 4 --grid_size=32
            # --use_grid_balancing_loss=true --weight_decay=1e-5 --unet=true --gamma_unet=300 --weight_loss_annotated=3):
            # 512 px (XRayResizerPadRound32 geometry), AMSGrad lr 1e-3, wd 1e-5, batch 20, 60 epochs, no scheduler
            # (use_lr_scheduler false), best epoch by the mean validation AUC
            "default": {
                "model": {
                    "backbone": "resnet50",
                    "hidden": 512,
                    "decoder_widths": [128, 64],
                    "normalization": "brn_code",
                    "concat_upsample": "nearest",
                    "input_norm": "imagenet_twice",
                },
                "loss": {
                    "lambda_a": 3.0,
                    "lambda_t": 300.0,
                    "threshold": 0.15,
                    "normalization": "brn_code",
                    "reduction": "code",
                    "decoder_target": "soft",
                },
                "data": {
                    "size": 512,
                    "letterbox_rule": "ricbl",
                    "labels": REFLACX_LABELS,
                    "targets": REFLACX_LABELS,
                    "augment": {"rotation_deg": 45, "translation": 0.15, "scale": 0.15},
                },
                "train": {
                    "epochs": 60,
                    "batch_size": 20,
                    "lr": 1e-3,
                    "weight_decay": 1e-5,
                    "optimizer": "amsgrad",
                    "monitor": "val_auc_mean",
                    "select_best": True,
                },
            },
            "tiny": {
                "model": {"backbone": "test_resnet", "hidden": 16, "decoder_widths": [16, 16], "input_norm": "none"},
                "loss": {"lambda_a": 3.0, "lambda_t": 10.0, "threshold": 0.15},
                "data": {"size": 64, "augment": None},
                "train": dict(TINY_TRAIN, optimizer="amsgrad"),
            },
        },
        inputs=ModelInputs("reflacx", "reflacx-label-specific", multilabel=True, maps_per_label=True),
    )
)


# -- 001 Qiu dual-encoder Res-SE-UNet ----------------------------------------------------------
def _qiu(model: dict, data: dict) -> QiuDualUNet:
    from gazeprep.train.models.qiu import QiuDualUNet

    return QiuDualUNet(class_names=_labels(data, EGD_CLASSES), **model)


def _qiu_obj(loss: dict) -> QiuObjective:
    from gazeprep.train.models.qiu import QiuObjective

    return QiuObjective(**loss)


register(
    ModelSpec(
        "qiu-dual-unet",
        "001",
        "Res-SE-UNet + frozen DenseNet-201, KL saliency loss, three-stage cooperative training",
        _qiu,
        _qiu_obj,
        presets={
            # section 4.3.5 and the code's stage scripts (HealthX-Lab/CXRGazeLearn CL/, Classfication/, KL/, Module/
            # RUN.py + hzhu_learn.py): 640 x 512 (pad 3200 x 2560, every 5th pixel), min-max per image, Adam lr 1e-4,
            # epochs 50 / 10 / 50 / 40 and batches 32 / 16 / 16 / 6 per stage, ReduceLROnPlateau(x0.1, patience 40,
            # eps 0) with the best weights reloaded at each drop, best epoch = lowest validation loss
            "default": {
                "model": {"densenet": "densenet201", "width": 64, "levels": 4, "input_norm": "minmax"},
                "loss": {"margin": 1.0},
                "data": {
                    "size": [640, 512],
                    "fit": "pad_crop_stride",
                    "stride": 5,
                    "targets": ["full"],
                    "labels": EGD_CLASSES,
                    "augment": None,
                },
                "train": {
                    "epochs": 50,
                    "batch_size": 16,
                    "lr": 1e-4,
                    "optimizer": "adam",
                    "stage_epochs": {"pretrain": 50, "classify": 10, "saliency": 50, "fusion": 40},
                    "stage_batch_size": {"pretrain": 32, "classify": 16, "saliency": 16, "fusion": 6},
                    "scheduler": {"kind": "plateau", "factor": 0.1, "patience": 40, "eps": 0.0, "reload_best": True},
                    "monitor": "val_loss",
                    "select_best": True,
                    "early_stop_patience": 83,
                    "stop_lr": 1e-8,
                },
            },
            "tiny": {
                "model": {"densenet": "tiny", "width": 8, "input_norm": "none"},
                "loss": {"margin": 1.0},
                "data": {"size": 64, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                "train": dict(TINY_TRAIN, epochs=5),
            },
        },
        inputs=ModelInputs(
            "egd-cxr", "egd-gaze-samples-max"
        ),  # 640 x 512, stride 5: the preset's frame (paper; Data/data.py writes 320 x 256)
    )
)


# -- 000 I-AI adapter + masked classifier ------------------------------------------------------
def _iai(model: dict, data: dict) -> IAIModel:
    from gazeprep.train.models.iai import IAIModel

    return IAIModel(class_names=_labels(data, EGD_CLASSES), map_names=list(data.get("targets") or ["full"]), **model)


def _iai_obj(loss: dict) -> IAIObjective:
    from gazeprep.train.models.iai import IAIObjective

    return IAIObjective(**loss)


register(
    ModelSpec(
        "iai-adapter",
        "000",
        "adapter ViT fused with frozen BiomedCLIP at stem/3/6/9, scaling vector, intensity decoder; masked classifier",
        _iai,
        _iai_obj,
        presets={
            # section 5.1 implementation details: 8-layer adapter, D 240, 6 heads, AdamW lr 1e-4, batch 16, 60,000
            # iterations, 224 px; the code's solver (UARK-AICV/IAI configs/Base-tsan.yaml): weight decay 1e-4,
            # WarmupPolyLR (power 0.9, no warm-up), full-model gradient clipping at norm 0.01, no augmentation; loss
            # weights 5 / 5 / 5 (tiai_biomedclip_l2_mask_dice_heatmap_e2e_v2.yaml: L2, MASK, DICE); images through
            # BiomedCLIP's preprocessing (short side to 224, centre crop: fit cover). The classifier stage's length
            # is not given: 50 epochs here
            "default": {
                "model": {
                    "clip": "biomedclip",
                    "clip_dir": None,
                    "adapter_dim": 240,
                    "adapter_depth": 8,
                    "adapter_heads": 6,
                    "mlp_hidden": 256,
                },
                "loss": {"lambdas": [5.0, 5.0, 5.0]},
                "data": {"size": 224, "fit": "cover", "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                "train": {
                    "epochs": 50,
                    "batch_size": 16,
                    "lr": 1e-4,
                    "weight_decay": 1e-4,
                    "optimizer": "adamw",
                    "stage_iterations": {"heatmap": 60000},
                    "scheduler": {"kind": "poly", "power": 0.9},
                    "grad_clip_norm": 0.01,
                },
            },
            "tiny": {
                "model": {
                    "clip": "tiny",
                    "adapter_dim": 48,
                    "adapter_depth": 4,
                    "adapter_heads": 4,
                    "mlp_hidden": 32,
                    "image_size": 64,
                    "finetune_classifier_encoder": False,
                    "classifier_norm": True,
                },
                "loss": {"lambdas": [1.0, 1.0, 1.0]},
                "data": {"size": 64, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                # no BN recalibration: the only batch norm (classifier_norm) sits behind the frozen encoder and
                # averages its statistics over all training batches, also when the objective masks with targets
                "train": dict(TINY_TRAIN, epochs=6, stage_lr={"classifier": 1e-2}, recalibrate_bn=False),
            },
        },
        # what the presets above train on (a "full" map and EGD-CXR's classes); the paper's anatomy
        # targets come from reflacx-anatomy: change this together with the presets
        inputs=ModelInputs("egd-cxr", "egd-static"),
    )
)


# -- Grad-CAM family baselines -----------------------------------------------------------------
def _gradcam(model: dict, data: dict) -> CAMBaseline:
    from gazeprep.train.models.gradcam import CAMBaseline

    return CAMBaseline(class_names=_labels(data, EGD_CLASSES), **model)


def _gradcam_obj(loss: dict) -> ClassifierObjective:
    from gazeprep.train.models.gradcam import ClassifierObjective

    return ClassifierObjective(**loss)


register(
    ModelSpec(
        "gradcam-baseline",
        "001/003",
        "plain CNN classifier explained post hoc with pytorch-grad-cam (GradCAM, GradCAM++, XGradCAM, EigenCAM, ...)",
        _gradcam,
        _gradcam_obj,
        presets={
            # 001 chapter 3 (section 3.2.2; no public code): CLAHE and a z-transform per image, 224 x 224, Adam lr 1e-4
            # for 50 epochs (CNNs), augmentation with Gaussian noise, rotations up to 10 degrees, horizontal flips and
            # brightness/contrast shifts (magnitudes not given: 0.01 / 0.1 / 0.1 here); ImageNet-pretrained backbones
            # (model.weights, a local file); no model selection stated: the last epoch is kept
            "default": {
                "model": {"backbone": "resnet50", "method": "gradcam", "input_norm": "zscore"},
                "loss": {},
                "data": {
                    "size": 224,
                    "fit": "stretch",
                    "clahe": True,
                    "targets": ["full"],
                    "labels": EGD_CLASSES,
                    "augment": {
                        "rotation_deg": 10,
                        "translation": 0.0,
                        "scale": 0.0,
                        "hflip": True,
                        "brightness": 0.1,
                        "contrast": 0.1,
                        "noise_std": 0.01,
                    },
                },
                "train": {"epochs": 50, "batch_size": 16, "lr": 1e-4, "optimizer": "adam"},
            },
            "tiny": {
                "model": {"backbone": "test_resnet", "method": "gradcam", "input_norm": "none"},
                "loss": {},
                "data": {"size": 64, "targets": ["full"], "labels": EGD_CLASSES, "augment": None},
                "train": dict(TINY_TRAIN),
            },
        },
        inputs=ModelInputs("egd-cxr", "egd-static", needs_maps=False),  # maps only for evaluation
    )
)
