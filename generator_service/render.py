"""Generated images as PNG bytes that carry how they were made, in PNG text chunks."""

from __future__ import annotations

import io
from collections.abc import Mapping

from PIL import Image
from PIL.PngImagePlugin import PngInfo

SOFTWARE = "terra"


def png_bytes(image: Image.Image, parameters: Mapping[str, object]) -> bytes:
    """The image as PNG with one text chunk per parameter (None values left out).

    Latin-1 text goes in tEXt chunks; Pillow writes anything else (a prompt in another
    script) as UTF-8 iTXt. `Software` is always "terra".
    """
    info = PngInfo()
    for key, value in parameters.items():
        if value is not None:
            info.add_text(key, str(value))
    info.add_text("Software", SOFTWARE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def png_parameters(data: bytes) -> dict[str, str]:
    """The text chunks of a PNG written by `png_bytes`."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return dict(image.text)
