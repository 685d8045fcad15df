"""The demo scene: photos that scikit-image bundles (CC0), pasted at known places on a large canvas.

Each object comes with the ImageNet classes that name it, so a dense evaluation of the scene can be
checked: the peak of an object's class should fall inside the object's box. The photos are the
ones the offline ``efficientnet_lite0`` recognises on their own (checked one by one); the astronaut,
for instance, is left out because the model calls her a bobsled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .evaluation.predict import Prediction

__all__ = ["SceneObject", "SCENE_SIZE", "PHOTO_CLASSES", "PeakCheck", "check_peaks",
           "compose_scene", "compose_single", "photo", "scene_objects"]

# (height, width) of the canvas, in pixels
SCENE_SIZE = (1000, 1400)


@dataclass(frozen=True)
class SceneObject:
    """One photo on the canvas.

    Attributes:
        name: the scikit-image photo (``"chelsea"``, ...).
        box: ``(x0, y0, x1, y1)`` half-open, in canvas pixels.
        classes: ImageNet class indices that name the object (any of them counts).
    """

    name: str
    box: tuple[int, int, int, int]
    classes: tuple[int, ...]

    def contains(self, x: float, y: float) -> bool:
        """Whether the point ``(x, y)`` (continuous canvas coordinates) lies inside the box."""
        x0, y0, x1, y1 = self.box
        return x0 <= x < x1 and y0 <= y < y1


def _photos() -> dict[str, Callable[[], np.ndarray]]:
    try:
        from skimage import data
    except ImportError as err:  # an optional dependency: say how to get it
        raise ValueError("the demo scene needs scikit-image: pip install 'fcnclassify[demo]'") from err

    def gray_to_rgb(image: np.ndarray) -> np.ndarray:
        return np.repeat(image[:, :, None], 3, axis=2)

    return {
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "rocket": lambda: data.rocket()[:, 100:527],  # the square around the rocket and its tower
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "cameraman": lambda: gray_to_rgb(data.camera()),
    }


# name, (x0, y0) on the canvas, (height, width) pasted, ImageNet classes
_LAYOUT: tuple[tuple[str, tuple[int, int], tuple[int, int], tuple[int, ...]], ...] = (
    # tabby, tiger cat, Persian, Siamese, Egyptian cat
    ("chelsea", (60, 70), (300, 451), (281, 282, 283, 284, 285)),
    # coffee mug, espresso, cup
    ("coffee", (580, 70), (300, 450), (504, 967, 968)),
    # missile, projectile (ImageNet has no rocket; "space shuttle" peaks on the launch pad below it)
    ("rocket", (1090, 70), (280, 280), (657, 744)),
    # moped, motor scooter
    ("motorcycle", (140, 600), (300, 445), (665, 670)),
    # tripod (the cameraman's)
    ("cameraman", (800, 590), (320, 320), (872,)),
)


def scene_objects() -> list[SceneObject]:
    """The objects of :func:`compose_scene`'s canvas, without composing it."""
    return [SceneObject(name, (x, y, x + w, y + h), classes)
            for name, (x, y), (h, w), classes in _LAYOUT]


def compose_scene(*, background: tuple[int, int] = (214, 168)) -> tuple[np.ndarray, list[SceneObject]]:
    """Pastes the photos on a canvas of :data:`SCENE_SIZE` with a soft vertical grey gradient.

    Args:
        background: grey level at the top and at the bottom of the canvas.

    Returns:
        The RGB uint8 canvas ``(1000, 1400, 3)`` and the objects with their boxes and classes.

    Raises:
        ValueError: scikit-image is not installed.
    """
    from .io.images import resize

    height, width = SCENE_SIZE
    top, bottom = background
    ramp = np.linspace(top, bottom, height, dtype=np.float32).round().astype(np.uint8)
    canvas = np.repeat(np.repeat(ramp[:, None, None], width, axis=1), 3, axis=2)
    photos = _photos()
    objects = scene_objects()
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        canvas[y0:y1, x0:x1] = resize(np.ascontiguousarray(photos[obj.name]()), (y1 - y0, x1 - x0))
    return canvas, objects


# The label set of each photo alone (any class counts), for accuracy. Stricter than the demo's layout
# for chelsea: she is a tabby, not a Persian or a Siamese.
PHOTO_CLASSES: dict[str, tuple[int, ...]] = {
    "chelsea": (281, 282, 285),  # tabby, tiger cat, Egyptian cat
    "coffee": (967, 968, 504),  # espresso, cup, coffee mug
    "rocket": (657, 744),  # missile, projectile
    "motorcycle": (665, 670),  # moped, motor scooter
    "cameraman": (872,),  # tripod
}


def photo(name: str) -> np.ndarray:
    """The scikit-image photo ``name`` (a key of :data:`PHOTO_CLASSES`) as an RGB uint8 array.

    Raises:
        ValueError: an unknown name, or scikit-image is not installed.
    """
    photos = _photos()
    if name not in photos:
        raise ValueError(f"expected a photo in {', '.join(photos)} but got {name!r}")
    return np.ascontiguousarray(photos[name]())


def compose_single(name: str, *, size: tuple[int, int], seed: int = 0,
                   fraction: tuple[float, float] = (1 / 3, 1 / 2)) -> tuple[np.ndarray, SceneObject]:
    """One photo alone on a plain grey gradient, at a seeded random place and size.

    The photo keeps its aspect ratio; its longer side is a random share in ``fraction`` of the
    canvas's shorter side. The gradient's top and bottom grey levels are drawn from 140..230 (equal
    levels give a plain background). Everything random comes from ``seed``.

    Args:
        name: a key of :data:`PHOTO_CLASSES`.
        size: ``(height, width)`` of the canvas, in pixels.
        seed: seed of the place, the size and the background.
        fraction: range of the photo's longer side, as a share of the canvas's shorter side.

    Returns:
        The RGB uint8 canvas ``(height, width, 3)`` and the object, with its box in canvas pixels
        and its classes from :data:`PHOTO_CLASSES`.

    Raises:
        ValueError: an unknown name, a canvas or fraction that leaves no room for the photo, or
            scikit-image is not installed.
    """
    from .io.images import resize

    height, width = size
    low, high = fraction
    if not 0 < low <= high <= 1:
        raise ValueError(f"expected 0 < fraction[0] <= fraction[1] <= 1 but got {fraction}")
    image = photo(name)
    rng = np.random.default_rng(seed)
    longer = rng.uniform(low, high) * min(height, width)
    ratio = longer / max(image.shape[:2])
    h, w = max(1, round(image.shape[0] * ratio)), max(1, round(image.shape[1] * ratio))
    if h > height or w > width or min(h, w) < 2:
        raise ValueError(f"expected a canvas that holds the photo but got {height}x{width} "
                         f"(height x width) for a {h}x{w} photo")
    x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    top, bottom = (int(v) for v in rng.integers(140, 231, size=2))
    ramp = np.linspace(top, bottom, height, dtype=np.float32).round().astype(np.uint8)
    canvas = np.repeat(np.repeat(ramp[:, None, None], width, axis=1), 3, axis=2)
    canvas[y0:y0 + h, x0:x0 + w] = resize(image, (h, w))
    return canvas, SceneObject(name, (x0, y0, x0 + w, y0 + h), PHOTO_CLASSES[name])


@dataclass(frozen=True)
class PeakCheck:
    """Where the best of an object's classes peaks, and whether that is inside the object.

    Attributes:
        object: the object.
        cls: the object's class with the highest peak.
        x, y: the peak, in canvas pixels.
        score: the class probability at the peak.
        inside: whether the peak lies in the object's box.
    """

    object: SceneObject
    cls: int
    x: float
    y: float
    score: float
    inside: bool


def check_peaks(prediction: Prediction, objects: list[SceneObject]) -> list[PeakCheck]:
    """For each object, the peak of its class (the one of its classes that peaks highest).

    Args:
        prediction: a :class:`fcnclassify.evaluation.predict.Prediction` of the canvas.
        objects: the objects from :func:`compose_scene`.
    """
    checks = []
    for obj in objects:
        peaks = {cls: prediction.peak(cls) for cls in obj.classes}
        cls = max(peaks, key=lambda c: peaks[c]["score"])
        x, y = float(peaks[cls]["x"]), float(peaks[cls]["y"])
        checks.append(PeakCheck(obj, cls, x, y, float(peaks[cls]["score"]), obj.contains(x, y)))
    return checks
