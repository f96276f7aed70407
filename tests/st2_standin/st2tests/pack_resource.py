"""Base of the pack resource test cases, as in ``st2tests.pack_resource``."""

import inspect
import os
from unittest import TestCase

__all__ = ["BasePackResourceTestCase"]


class BasePackResourceTestCase(TestCase):
    """Finds the pack under test from the test file: ``<pack>/tests/test_x.py``."""

    def get_fixture_content(self, fixture_path):
        """Raw content of ``<pack>/tests/fixtures/<fixture_path>``."""
        fixtures_path = os.path.join(self._get_base_pack_path(), "tests/fixtures/")
        with open(os.path.join(fixtures_path, fixture_path), "r") as fp:
            return fp.read()

    def _get_base_pack_path(self):
        test_file_path = inspect.getfile(self.__class__)
        return os.path.abspath(os.path.join(os.path.dirname(test_file_path), ".."))
