"""Draw the pack's icon.png (64x64): an envelope with a return arrow, on a rounded square.

Uses only the standard library (zlib, struct): shapes are tested per sub-pixel (4x4
supersampling for smooth edges) and the result is written as an RGBA PNG.

    python tools/make_icon.py [output path, default: icon.png]
"""

import math
import struct
import sys
import zlib

SIZE = 64
SUPERSAMPLE = 4

BACKGROUND = (27, 58, 107)
ENVELOPE = (246, 247, 250)
FLAP = (27, 58, 107)
ARROW = (242, 122, 36)


def _in_rounded_square(x, y, size=SIZE, radius=13.0):
    cx = min(max(x, radius), size - radius)
    cy = min(max(y, radius), size - radius)
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2


def _near_segment(x, y, a, b, half_width):
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / float(dx * dx + dy * dy)))
    px, py = ax + t * dx, ay + t * dy
    return (x - px) ** 2 + (y - py) ** 2 <= half_width ** 2


def _in_triangle(x, y, p1, p2, p3):
    def side(a, b):
        return (x - b[0]) * (a[1] - b[1]) - (a[0] - b[0]) * (y - b[1])
    d1, d2, d3 = side(p1, p2), side(p2, p3), side(p3, p1)
    has_neg = d1 < 0 or d2 < 0 or d3 < 0
    has_pos = d1 > 0 or d2 > 0 or d3 > 0
    return not (has_neg and has_pos)


# The envelope: a card with its flap drawn as a V.
ENV_LEFT, ENV_TOP, ENV_RIGHT, ENV_BOTTOM = 8.0, 26.0, 44.0, 52.0
FLAP_TIP = ((ENV_LEFT + ENV_RIGHT) / 2.0, 41.0)

# The return arrow: an arc over the top right, turning back down into the envelope.
ARC_CX, ARC_CY, ARC_R, ARC_HALF_WIDTH = 45.0, 23.0, 10.0, 2.4
ARC_FROM, ARC_TO = math.radians(-40.0), math.radians(195.0)


def _arc_end_arrowhead():
    a = ARC_TO
    ex, ey = ARC_CX + ARC_R * math.cos(a), ARC_CY - ARC_R * math.sin(a)
    # Direction of travel at the end (angle increasing), in image coordinates.
    tx, ty = -math.sin(a), -math.cos(a)
    nx, ny = -ty, tx
    tip = (ex + tx * 8.0, ey + ty * 8.0)
    left = (ex + nx * 6.5 - tx * 1.0, ey + ny * 6.5 - ty * 1.0)
    right = (ex - nx * 6.5 - tx * 1.0, ey - ny * 6.5 - ty * 1.0)
    return tip, left, right


ARROWHEAD = _arc_end_arrowhead()


def _in_arc(x, y, grow=0.0):
    dx, dy = x - ARC_CX, ARC_CY - y
    if abs(math.hypot(dx, dy) - ARC_R) > ARC_HALF_WIDTH + grow:
        return False
    angle = math.atan2(dy, dx)
    if angle < ARC_FROM:
        angle += 2 * math.pi
    return ARC_FROM <= angle <= ARC_TO


def _in_arrow(x, y, grow=0.0):
    if _in_arc(x, y, grow) or _in_triangle(x, y, *ARROWHEAD):
        return True
    if grow:
        tip, left, right = ARROWHEAD
        return any(_near_segment(x, y, a, b, grow)
                   for a, b in ((tip, left), (left, right), (right, tip)))
    return False


def colour_at(x, y):
    """The colour at a sub-pixel position, or None outside the icon."""
    if _in_arrow(x, y):
        return ARROW
    if _in_arrow(x, y, grow=1.5):
        return BACKGROUND  # a rim, so the arrow stands out where it crosses the envelope
    if ENV_LEFT <= x <= ENV_RIGHT and ENV_TOP <= y <= ENV_BOTTOM:
        if (_near_segment(x, y, (ENV_LEFT + 1, ENV_TOP + 1), FLAP_TIP, 1.3)
                or _near_segment(x, y, (ENV_RIGHT - 1, ENV_TOP + 1), FLAP_TIP, 1.3)):
            return FLAP
        return ENVELOPE
    if _in_rounded_square(x, y):
        return BACKGROUND
    return None


def render():
    rows = []
    step = 1.0 / SUPERSAMPLE
    for py in range(SIZE):
        row = bytearray()
        for px in range(SIZE):
            r = g = b = covered = 0
            for sy in range(SUPERSAMPLE):
                for sx in range(SUPERSAMPLE):
                    colour = colour_at(px + (sx + 0.5) * step, py + (sy + 0.5) * step)
                    if colour is not None:
                        r, g, b, covered = r + colour[0], g + colour[1], b + colour[2], covered + 1
            if covered:
                row += bytes([r // covered, g // covered, b // covered,
                              255 * covered // (SUPERSAMPLE * SUPERSAMPLE)])
            else:
                row += bytes([0, 0, 0, 0])
        rows.append(bytes(row))
    return rows


def png_bytes(rows):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)  # 8-bit RGBA
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 on every row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main(path):
    with open(path, "wb") as fp:
        fp.write(png_bytes(render()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "icon.png"))
