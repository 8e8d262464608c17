# -*- test-case-name: tests.test_packaging -*-
"""
What C{setup.cfg} promises holds: on every Python version that
C{python_requires} admits, every module socksrelay imports is either in that
version's standard library or an C{install_requires} dependency installed
there, and README.rst and the classifiers name the same versions.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import os
import re
import sys
import unittest

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.e2e import REPO_ROOT

#: Standard-library modules that appeared after Python 3.8, with the version
#: that brought them (the running interpreter's C{sys.stdlib_module_names}
#: cannot say when a module arrived).
STDLIB_ADDED = {
    "graphlib": (3, 9),
    "zoneinfo": (3, 9),
    "tomllib": (3, 11),
}

#: The minor versions of Python 3 that the checks consider.
CANDIDATE_MINORS = range(0, 40)

#: Where socksrelay's own code lives.
SOURCE_DIRS = ("socksrelay", os.path.join("twisted", "plugins"))


def readSetupCfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(os.path.join(REPO_ROOT, "setup.cfg"))
    return parser


def admittedVersions(pythonRequires: str) -> list[tuple[int, int]]:
    """
    Every C{(3, minor)} of which at least one release satisfies
    C{pythonRequires}.
    """
    spec = SpecifierSet(pythonRequires)
    return [
        (3, minor)
        for minor in CANDIDATE_MINORS
        if any(spec.contains(f"3.{minor}.{patch}") for patch in range(30))
    ]


def requirements(parser: configparser.ConfigParser) -> list[Requirement]:
    lines = parser.get("options", "install_requires").strip().splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def _versionGuard(test: ast.expr) -> tuple[int, int] | None:
    """
    C{(major, minor)} if C{test} is C{sys.version_info >= (major, minor)}.
    """
    if (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.GtE)
        and ast.unparse(test.left) == "sys.version_info"
    ):
        bound = ast.literal_eval(test.comparators[0])
        return (bound[0], bound[1])
    return None


def importsOn(tree: ast.AST, version: tuple[int, int]) -> set[str]:
    """
    The top-level names of the modules that code imports when it runs on
    C{version}: imports under C{if sys.version_info >= (X, Y)} count only on
    the side of the guard that C{version} takes; C{if TYPE_CHECKING} blocks
    never run.
    """
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If):
            if ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                for child in node.orelse:
                    visit(child)
                return
            bound = _versionGuard(node.test)
            if bound is not None:
                for child in node.body if version >= bound else node.orelse:
                    visit(child)
                return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def sourceTrees() -> dict[str, ast.AST]:
    trees = {}
    for directory in SOURCE_DIRS:
        full = os.path.join(REPO_ROOT, directory)
        for name in sorted(os.listdir(full)):
            if name.endswith(".py"):
                path = os.path.join(full, name)
                with open(path, encoding="utf-8") as f:
                    trees[os.path.join(directory, name)] = ast.parse(f.read())
    return trees


class PythonVersionTests(unittest.TestCase):
    """
    The versions C{python_requires} admits can run socksrelay.
    """

    def setUp(self) -> None:
        self.cfg = readSetupCfg()
        self.versions = admittedVersions(
            self.cfg.get("options", "python_requires")
        )

    def test_everyImportIsAvailableOnEveryAdmittedVersion(self) -> None:
        """
        For every minor version C{python_requires} admits and every module
        socksrelay's code imports on that version (following
        C{sys.version_info} guards, as C{socksrelay/config.py}'s TOML import
        once had), the module is in that version's standard library or is
        provided by an C{install_requires} dependency whose environment
        marker holds on that version.  (C{>=3.10} with C{tomli} imported
        below 3.11 and no C{tomli} dependency failed this.)
        """
        self.assertTrue(self.versions, "python_requires admits no version")
        providers = importlib.metadata.packages_distributions()
        reqs = requirements(self.cfg)
        project = canonicalize_name(self.cfg.get("metadata", "name"))
        trees = sourceTrees()
        problems = []
        for version in self.versions:
            environment = {"python_version": f"{version[0]}.{version[1]}"}
            declared = {
                canonicalize_name(req.name)
                for req in reqs
                if req.marker is None or req.marker.evaluate(environment)
            }
            for path, tree in trees.items():
                for module in sorted(importsOn(tree, version)):
                    if module in sys.stdlib_module_names or module == "__future__":
                        added = STDLIB_ADDED.get(module)
                        if added is not None and version < added:
                            problems.append(
                                f"Python {version[0]}.{version[1]}: {path} "
                                f"imports {module}, which is in the "
                                f"standard library only from "
                                f"{added[0]}.{added[1]}"
                            )
                        continue
                    dists = {
                        canonicalize_name(d) for d in providers.get(module, [])
                    }
                    if project in dists or dists & declared:
                        continue
                    problems.append(
                        f"Python {version[0]}.{version[1]}: {path} imports "
                        f"{module}, which neither the standard library nor "
                        f"an install_requires dependency for that version "
                        f"provides"
                    )
        self.assertEqual(problems, [])

    def test_readmeNamesTheMinimumVersion(self) -> None:
        """
        README.rst's install line names the oldest version C{python_requires}
        admits ("Python 3.N or newer"), and every C{Python :: 3.N} classifier
        is an admitted version.
        """
        with open(os.path.join(REPO_ROOT, "README.rst"), encoding="utf-8") as f:
            readme = f.read()
        stated = re.findall(r"Python (3\.\d+) or newer", readme)
        oldest = self.versions[0]
        self.assertEqual(stated, [f"{oldest[0]}.{oldest[1]}"])
        classified = re.findall(
            r"Programming Language :: Python :: (3\.\d+)$",
            self.cfg.get("metadata", "classifiers"),
            re.MULTILINE,
        )
        self.assertTrue(classified)
        for text in classified:
            major, minor = (int(part) for part in text.split("."))
            self.assertIn((major, minor), self.versions)

    def test_markerEvaluationIsPerVersion(self) -> None:
        """
        The check above sees markers: a dependency limited to
        C{python_version < "3.11"} counts on 3.10 and not on 3.11.
        """
        marker = Marker('python_version < "3.11"')
        self.assertTrue(marker.evaluate({"python_version": "3.10"}))
        self.assertFalse(marker.evaluate({"python_version": "3.11"}))
        tree = ast.parse(
            "import sys\n"
            "if sys.version_info >= (3, 11):\n    import tomllib\n"
            "else:\n    import tomli as tomllib\n"
        )
        self.assertEqual(importsOn(tree, (3, 10)), {"sys", "tomli"})
        self.assertEqual(importsOn(tree, (3, 11)), {"sys", "tomllib"})
