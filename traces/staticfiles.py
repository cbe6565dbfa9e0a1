"""Static file names for pages: the ``collectstatic`` build's when there is one, else plain."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class BuiltOrSourceStorage(CompressedManifestStaticFilesStorage):
    """``collectstatic`` writes hashed, gzipped copies and their manifest (WhiteNoise's storage).

    Pages then link the hashed names, which WhiteNoise serves with a year-long cache. With
    no build (a checkout, the test suite) the manifest is empty, and the stock storage would
    refuse every ``{% static %}``; here pages link the plain names instead, which WhiteNoise
    serves from the source tree (``WHITENOISE_USE_FINDERS`` in settings).
    """

    def stored_name(self, name: str) -> str:
        if not self.hashed_files:
            return name
        return super().stored_name(name)
