"""Optional dependencies (Pillow, h5py), imported only when a format needs them, and decoding."""

from __future__ import annotations

import io
from types import ModuleType

import numpy as np

__all__ = ["decode_image", "require_h5py", "require_pillow"]


def require_pillow() -> ModuleType:
    """``PIL.Image``, or an ImportError saying which extra installs it."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow is in the dev extra
        raise ImportError(
            "reading JPEG/PNG datasets needs Pillow: pip install 'metalearn[data]'"
        ) from e
    return Image


def require_h5py() -> ModuleType:
    """``h5py``, or an ImportError saying which extra installs it."""
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is in the dev extra
        raise ImportError(
            "reading torchmeta's HDF5 MiniImagenet needs h5py: pip install 'metalearn[data]'"
        ) from e
    return h5py


def decode_image(source: str | bytes, name: str, mode: str, size: int) -> np.ndarray:
    """Decode an image file (a path, or its bytes) to ``uint8`` ``[size, size(, 3)]``.

    The image is converted to ``mode`` ("RGB" or "L") and resized with Lanczos filtering when it
    is not already ``size x size`` (Ravi & Larochelle's and Finn et al.'s preprocessing).

    Raises:
        ValueError: naming ``name`` if the file is corrupt, truncated or not an image.
    """
    image_module = require_pillow()
    try:
        with image_module.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            im.load()  # decode now so a truncated file fails here, with its name
            im = im.convert(mode)
            if im.size != (size, size):
                im = im.resize((size, size), resample=image_module.Resampling.LANCZOS)
            return np.asarray(im, dtype=np.uint8)
    except image_module.DecompressionBombError as e:  # not an OSError: named here too
        raise ValueError(
            f"image {name} was refused: its pixel count is far beyond any dataset image (a "
            f"decompression bomb?): {e}"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"cannot decode image {name}: {e}") from e
