"""Every loss builds by name, gives a finite scalar with gradients, and known values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from covseg.config import TrainConfig
from covseg.errors import CovsegError
from covseg.losses import BINARY_ONLY, LOSSES, build_loss, trained_loss

CASES = [(name, k) for name in LOSSES for k in (2, 4) if not (name in BINARY_ONLY and k == 4)]


def labels(num_classes: int, seed: int = 0) -> torch.Tensor:
    """(2, 1, 16, 16) integer label map using every class."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, (2, 1, 16, 16), generator=generator)


def confident_logits(target: torch.Tensor, num_classes: int, sign: float = 1.0) -> torch.Tensor:
    """Logits of +-20 that agree (sign 1) or disagree (sign -1) with ``target``."""
    if num_classes == 2:
        return sign * (target.float() * 2 - 1) * 20
    onehot = F.one_hot(target[:, 0], num_classes).permute(0, 3, 1, 2).float()
    return sign * (onehot * 2 - 1) * 20


def channels(num_classes: int) -> int:
    return 1 if num_classes == 2 else num_classes


@pytest.mark.parametrize(("name", "num_classes"), CASES)
def test_finite_scalar_with_gradients(name: str, num_classes: int) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, channels(num_classes), 16, 16, requires_grad=True)
    value = build_loss(name, num_classes)(logits, labels(num_classes))
    assert value.shape == ()
    assert torch.isfinite(value)
    value.backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "num_classes"), CASES)
def test_perfect_prediction_is_near_zero(name: str, num_classes: int) -> None:
    target = labels(num_classes)
    value = build_loss(name, num_classes)(confident_logits(target, num_classes), target)
    assert float(value) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("name", ["dice", "tversky"])
def test_completely_wrong_prediction_is_near_one(name: str, num_classes: int) -> None:
    target = labels(num_classes)
    wrong = confident_logits(target, num_classes, sign=-1.0)
    assert float(build_loss(name, num_classes)(wrong, target)) == pytest.approx(1.0, abs=1e-3)


def test_binary_cross_entropy_of_zero_logits_is_log_two() -> None:
    value = build_loss("bce")(torch.zeros(2, 1, 16, 16), labels(2))
    assert float(value) == pytest.approx(math.log(2), rel=1e-5)


def test_multiclass_cross_entropy_term_of_uniform_logits_is_log_k() -> None:
    loss = build_loss("ce+dice", 4, dice_weight=0.0)
    assert float(loss(torch.zeros(2, 4, 16, 16), labels(4))) == pytest.approx(math.log(4), rel=1e-5)


def test_binary_focal_of_zero_logits() -> None:
    """gamma = 2: (1 - 0.5)^2 * log 2 per pixel."""
    value = build_loss("focal")(torch.zeros(2, 1, 16, 16), labels(2))
    assert float(value) == pytest.approx(0.25 * math.log(2), rel=1e-5)


def with_gamma(loss: torch.nn.Module, gamma: float) -> torch.nn.Module:
    """``loss`` with the gamma of the MONAI focal loss inside it set to ``gamma``."""
    from monai.losses import FocalLoss

    for module in loss.modules():
        if isinstance(module, FocalLoss):
            module.gamma = gamma
    return loss


@pytest.mark.parametrize("num_classes", [3, 4])
def test_multiclass_focal_at_gamma_zero_is_the_cross_entropy(num_classes: int) -> None:
    """MONAI's "mean" also averaged over the class channels: CE / K, weighing focal+dice's
    focal term 1:K against Dice where binary data weighed it 1:1."""
    torch.manual_seed(0)
    logits = torch.randn(2, num_classes, 16, 16)
    target = labels(num_classes)
    value = with_gamma(build_loss("focal", num_classes), 0.0)(logits, target)
    assert float(value) == pytest.approx(float(F.cross_entropy(logits, target[:, 0])), rel=1e-5)


def test_multiclass_focal_is_the_per_pixel_focal_loss() -> None:
    """-(1 - p_t)^2 log p_t, p_t the softmax probability of the true class, mean over pixels."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 16, 16)
    target = labels(4)
    log_p_true = F.log_softmax(logits, 1).gather(1, target)
    expected = (-(1 - log_p_true.exp()) ** 2 * log_p_true).mean()
    value = build_loss("focal", 4)(logits, target)
    assert float(value) == pytest.approx(float(expected), rel=1e-5)


def test_binary_focal_is_monai_sigmoid_focal_unchanged() -> None:
    """The one-channel focal loss is MONAI's default FocalLoss bit for bit, and per pixel
    (1 - p_t)^2 times the BCE."""
    from monai.losses import FocalLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16)
    target = labels(2)
    value = build_loss("focal")(logits, target)
    assert torch.equal(value, FocalLoss()(logits, target.float()))
    bce = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
    p_true = torch.where(target == 1, torch.sigmoid(logits), 1 - torch.sigmoid(logits))
    assert float(value) == pytest.approx(float(((1 - p_true) ** 2 * bce).mean()), rel=1e-5)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_weights_select_the_terms(num_classes: int) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, channels(num_classes), 16, 16)
    target = labels(num_classes)
    dice = float(build_loss("dice", num_classes)(logits, target))
    both = build_loss("ce+dice", num_classes, dice_weight=1.0, other_weight=0.0)
    assert float(both(logits, target)) == pytest.approx(dice, rel=1e-5)
    if num_classes == 2:
        bce = float(build_loss("bce")(logits, target))
        bce_dice = build_loss("bce+dice", dice_weight=0.0, other_weight=1.0)
        assert float(bce_dice(logits, target)) == pytest.approx(bce, rel=1e-5)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_focal_term_of_focal_dice_is_the_focal_loss(num_classes: int) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, channels(num_classes), 16, 16)
    target = labels(num_classes)
    focal = float(build_loss("focal", num_classes)(logits, target))
    focal_dice = build_loss("focal+dice", num_classes, dice_weight=0.0, other_weight=1.0)
    assert float(focal_dice(logits, target)) == pytest.approx(focal, rel=1e-5)


def test_structure_loss_weighs_errors_near_edges_more() -> None:
    """The same number of wrong pixels costs more on a lesion's edge than far inside the
    background, where the boundary weight is 1."""
    target = torch.zeros(1, 1, 96, 96, dtype=torch.long)
    target[..., 40:72, 40:72] = 1
    right = (target.float() * 2 - 1) * 20
    near_edge, far_away = right.clone(), right.clone()
    near_edge[..., 36:40, 40:72] = 20
    far_away[..., 0:4, 40:72] = 20
    loss = build_loss("structure")
    assert float(loss(near_edge, target)) > float(loss(far_away, target)) > 0


def test_structure_loss_box_mean_is_the_two_dimensional_mean() -> None:
    mask = labels(2).float()
    loss = build_loss("structure")
    full = F.avg_pool2d(mask, 31, stride=1, padding=15)
    assert torch.allclose(loss.box_mean(mask), full, atol=1e-6)


def test_tversky_weighs_false_positives_0_3_and_misses_0_7() -> None:
    """Predicting everything: 8 true and 8 false positives, no miss; 1 - 8 / (8 + 0.3 * 8).
    Swapped weights (0.7 on false positives) gave 0.41 unnoticed."""
    target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    target[..., :2, :] = 1
    loss = build_loss("tversky")(torch.full((1, 1, 4, 4), 50.0), target)
    assert float(loss) == pytest.approx(1 - 8 / (8 + 0.3 * 8), rel=1e-4)


def test_structure_loss_weighs_edges_by_one_plus_five_times_the_contrast() -> None:
    """Only an ordering pinned the edge weight, so 1 + 1x in place of 1 + 5x went unnoticed.
    With zero logits the BCE part is log 2 whatever the weights; the IoU part follows them."""
    target = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    target[..., 8:24, 8:24] = 1
    mask = target.float()
    weight = 1 + 5 * (F.avg_pool2d(mask, 31, stride=1, padding=15) - mask).abs()
    inter = (weight * 0.5 * mask).sum()
    union = (weight * (0.5 + mask)).sum()
    expected = math.log(2) + 1 - (inter + 1) / (union - inter + 1)
    loss = build_loss("structure")(torch.zeros(1, 1, 32, 32), target)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("name", BINARY_ONLY)
def test_binary_only_losses_refuse_multiclass(name: str) -> None:
    with pytest.raises(CovsegError, match="binary"):
        build_loss(name, num_classes=4)


def test_errors() -> None:
    with pytest.raises(CovsegError):
        build_loss("no-such-loss")


def test_the_recipe_records_the_loss_that_trains() -> None:
    """--target multiclass with the default bce+dice trained CE + Dice and recorded bce+dice;
    older records read the same way, so that a resume still matches."""
    multiclass = TrainConfig(target="multiclass")
    assert multiclass.loss == "ce+dice" and TrainConfig().loss == "bce+dice"
    assert TrainConfig(loss="ce+dice").loss == "bce+dice"  # binary: the sigmoid BCE + Dice
    assert TrainConfig(target="multiclass", loss="dice").loss == "dice"
    for name in ("bce+dice", "ce+dice"):
        assert trained_loss(name, multiclass=True) == "ce+dice"
        assert trained_loss(name, multiclass=False) == "bce+dice"
        logits = torch.randn(2, 4, 16, 16)
        assert torch.equal(build_loss(name, 4)(logits, labels(4)),
                           build_loss("ce+dice", 4)(logits, labels(4)))
    old_record = TrainConfig.from_dict({"target": "multiclass", "loss": "bce+dice"})
    assert old_record.differences(multiclass) == []
