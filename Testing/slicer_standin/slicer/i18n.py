"""Stand-in for slicer.i18n (no translation)."""


def tr(text):
    return text


def translate(context, text):
    return text


def getContext(sourceFile):
    return sourceFile
