"""What Slicer's terminology logic knows, for checking MedAI's terminology strings.

``Known(logic)`` reads, through ``vtkSlicerTerminologiesModuleLogic`` (real slicer-core, loaded
with Slicer's own .term.json files), every category, type and type modifier of every loaded
segmentation context and every anatomic context name; ``problems(entry)`` says what of one
serialized terminology entry Slicer does not know in the context the entry names.
"""

from __future__ import annotations


class Known:
    def __init__(self, logic):
        import slicer

        self.logic = logic
        self.types = {}  # (context, category code) -> {type code: (category meaning, type meaning, {modifier code: meaning})}
        names = []
        logic.GetLoadedTerminologyNames(names)
        for context in names:
            for i in range(logic.GetNumberOfCategoriesInTerminology(context)):
                category = slicer.vtkSlicerTerminologyCategory()
                logic.GetNthCategoryInTerminology(context, i, category)
                types = self.types.setdefault((context, category.GetCodeValue()), {})
                for j in range(logic.GetNumberOfTypesInTerminologyCategory(context, category)):
                    t = slicer.vtkSlicerTerminologyType()
                    logic.GetNthTypeInTerminologyCategory(context, category, j, t)
                    mods = {}
                    for k in range(logic.GetNumberOfTypeModifiersInTerminologyType(context, category, t)):
                        m = slicer.vtkSlicerTerminologyType()
                        logic.GetNthTypeModifierInTerminologyType(context, category, t, k, m)
                        mods[m.GetCodeValue()] = m.GetCodeMeaning()
                    types[t.GetCodeValue()] = (category.GetCodeMeaning(), t.GetCodeMeaning(), mods)
        anatomic = []
        logic.GetLoadedAnatomicContextNames(anatomic)
        self.anatomic_contexts = set(anatomic)
        self.contexts = set(names)

    def problems(self, serialized: str) -> list:
        """[] when Slicer knows the entry's category, type and type modifier in its context."""
        import slicer

        entry = slicer.vtkSlicerTerminologyEntry()
        if not serialized or not self.logic.DeserializeTerminologyEntry(serialized, entry):
            return [f"not a terminology entry Slicer can read: {serialized!r}"]
        context = entry.GetTerminologyContextName()
        if context not in self.contexts:
            return [f"context {context!r} is not one of Slicer's terminology files"]
        cat, typ, mod = entry.GetCategoryObject(), entry.GetTypeObject(), entry.GetTypeModifierObject()
        found = []
        types = self.types.get((context, cat.GetCodeValue()))
        if types is None:
            return [f"category {cat.GetCodeValue()} ({cat.GetCodeMeaning()}) is not in {context!r}"]
        if typ.GetCodeValue() not in types:
            return [f"type {typ.GetCodingSchemeDesignator()} {typ.GetCodeValue()} ({typ.GetCodeMeaning()}) is not in "
                    f"category {cat.GetCodeMeaning()} of {context!r}"]
        cat_meaning, type_meaning, mods = types[typ.GetCodeValue()]
        if (cat.GetCodeMeaning(), typ.GetCodeMeaning()) != (cat_meaning, type_meaning):
            found.append(f"meanings {cat.GetCodeMeaning()!r}/{typ.GetCodeMeaning()!r} differ from Slicer's "
                         f"{cat_meaning!r}/{type_meaning!r}")
        if mod.GetCodeValue():
            if mod.GetCodeValue() not in mods:
                found.append(f"modifier {mod.GetCodeValue()} ({mod.GetCodeMeaning()}) is not listed for "
                             f"{type_meaning} (listed: {sorted(mods.values()) or 'none'})")
            elif mods[mod.GetCodeValue()] != mod.GetCodeMeaning():
                found.append(f"modifier meaning {mod.GetCodeMeaning()!r} differs from Slicer's {mods[mod.GetCodeValue()]!r}")
        region_context = entry.GetAnatomicContextName()
        if region_context and region_context not in self.anatomic_contexts:
            found.append(f"anatomic context {region_context!r} is not one of Slicer's")
        return found
