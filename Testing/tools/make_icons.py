"""Draw the extension and module icons (128x128 PNG) with Pillow. Run from the repo root."""

from PIL import Image, ImageDraw

S = 128


def base(color):
    im = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((4, 4, S - 5, S - 5), radius=24, fill=color)
    return im, d


def brain(d, box, fill, outline=(255, 255, 255, 255)):
    x0, y0, x1, y1 = box
    d.ellipse(box, fill=fill, outline=outline, width=4)
    mx = (x0 + x1) // 2
    d.line((mx, y0 + 8, mx, y1 - 8), fill=outline, width=3)
    for dy in (0.35, 0.65):
        y = int(y0 + (y1 - y0) * dy)
        d.arc((x0 + 10, y - 10, mx - 4, y + 10), 200, 340, fill=outline, width=3)
        d.arc((mx + 4, y - 10, x1 - 10, y + 10), 200, 340, fill=outline, width=3)


def extension():
    im, d = base((24, 70, 140, 255))
    brain(d, (22, 22, 106, 96), (60, 130, 210, 255))
    d.text((42, 100), "MedAI", fill="white")
    return im


def medai():
    im, d = base((24, 70, 140, 255))
    brain(d, (24, 24, 104, 104), (60, 130, 210, 255))
    return im


def segment():
    im, d = base((24, 70, 140, 255))
    brain(d, (24, 24, 104, 104), (60, 130, 210, 255))
    d.ellipse((46, 54, 66, 74), fill=(230, 80, 60, 255))  # a segmented structure
    d.ellipse((64, 58, 82, 76), fill=(250, 200, 60, 255))
    return im


def fusion():
    im, d = base((24, 70, 140, 255))
    d.ellipse((18, 30, 82, 94), fill=(60, 130, 210, 200), outline="white", width=4)
    d.ellipse((46, 30, 110, 94), fill=(230, 120, 60, 170), outline="white", width=4)
    return im


if __name__ == "__main__":
    extension().save("Resources/Icons/MedAI.png")
    medai().save("MedAI/Resources/Icons/MedAI.png")
    segment().save("MedAISegment/Resources/Icons/MedAISegment.png")
    fusion().save("MedAIFusion/Resources/Icons/MedAIFusion.png")
