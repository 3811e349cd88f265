"""Draw a MOCK-UP of the MedAISegment panel (not a Slicer screenshot: Slicer cannot run on the build
machines). Widget texts come from Resources/UI/MedAISegment.ui. Run from the repo root."""

import xml.etree.ElementTree as ET

from PIL import Image, ImageDraw

ui = ET.parse("MedAISegment/Resources/UI/MedAISegment.ui").getroot()
text = {w.get("name"): (w.findtext("property[@name='text']/string") or "") for w in ui.iter("widget")}
W, H = 420, 560
im = Image.new("RGB", (W, H), (246, 246, 246))
d = ImageDraw.Draw(im)
y = 8
d.rectangle((0, 0, W - 1, 22), fill=(200, 60, 60))
d.text((8, 5), "MOCK-UP of the MedAI Segment panel (drawn from the .ui, not a screenshot)", fill="white")
y = 30


def section(title, rows):
    global y
    d.rectangle((6, y, W - 7, y + 18), fill=(222, 226, 232), outline=(170, 170, 170))
    d.text((12, y + 4), "v  " + title, fill="black")
    y += 24
    for label, value, kind in rows:
        if label:
            d.text((14, y + 4), label, fill="black")
        x0 = 120
        if kind == "combo":
            d.rectangle((x0, y, W - 14, y + 18), fill="white", outline=(150, 150, 150))
            d.text((x0 + 4, y + 4), value, fill="black")
            d.text((W - 26, y + 4), "v", fill="black")
        elif kind == "check":
            d.rectangle((x0, y + 3, x0 + 12, y + 15), fill="white", outline=(120, 120, 120))
            if value.startswith("[x]"):
                d.line((x0 + 2, y + 9, x0 + 5, y + 13, x0 + 11, y + 4), fill="black", width=2)
            d.text((x0 + 18, y + 4), value[3:], fill="black")
        else:
            d.text((x0, y + 4), value, fill=(60, 60, 60))
        y += 24
    y += 4


section(text["inputsCollapsibleButton"], [
    (text["modelFilterLabel"], "hippocampus", "combo"),
    (text["modelLabel"], "Hippocampus (anterior/posterior) on T1...", "combo"),
    ("", "3D U-Net trained by MedAI on MSD Task04", "text"),
    ("MR:", "hippocampus_003", "combo")])
section(text["structuresCollapsibleButton"], [("", "[x]anterior", "check"), ("", "[x]posterior", "check")])
section(text["optionsCollapsibleButton"], [(text["deviceLabel"], "Auto (GPU if available)", "combo"),
                                           (text["fastLabel"], "[ ]", "check")])
section(text["outputsCollapsibleButton"], [(text["outputLabel"], "Create new segmentation", "combo")])
d.rectangle((6, y, W - 7, y + 26), fill=(225, 225, 225), outline=(120, 120, 120))
d.text((W // 2 - 20, y + 8), "Cancel", fill="black")
y += 34
d.rectangle((6, y, W - 7, y + 16), fill="white", outline=(150, 150, 150))
d.rectangle((7, y + 1, 7 + int((W - 14) * 0.42), y + 15), fill=(60, 130, 210))
d.text((W // 2 - 10, y + 2), "42%", fill="black")
y += 22
d.text((8, y), "hippocampus_unet: sliding-window inference - about 12 s left", fill="black")
y += 22
section(text["logCollapsibleButton"] + " (collapsed)", [])
im.save("docs/images/MedAISegment-panel-mockup.png")
