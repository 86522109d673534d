"""Make assets/avatar.png from scikit-image's astronaut photo (public domain, NASA).

The photo is Eileen Collins, NASA portrait S94-26017, shipped in scikit-image as
skimage/data/astronaut.png (512x512). We keep it as is (square); the service fits it to the
output size at start-up.
"""

from pathlib import Path

import cv2
from skimage import data


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "assets" / "avatar.png"
    rgb = data.astronaut()
    cv2.imwrite(str(out), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    print(f"wrote {out} ({rgb.shape[1]}x{rgb.shape[0]})")


if __name__ == "__main__":
    main()
