"""LICENSE must be the full Apache License 2.0, as the StackStorm Exchange CI checks."""

import sys

# Phrases from the beginning, the middle and the end of the Apache License 2.0 text.
REQUIRED = (
    "Apache License",
    "Version 2.0, January 2004",
    "http://www.apache.org/licenses/",
    "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
    "Grant of Copyright License",
    "Grant of Patent License",
    "Redistribution",
    "END OF TERMS AND CONDITIONS",
    "APPENDIX: How to apply the Apache License to your work.",
    'Licensed under the Apache License, Version 2.0 (the "License");',
)


def main(path):
    try:
        with open(path, "r", encoding="utf-8") as fp:
            text = fp.read()
    except OSError as e:
        print("%s: cannot be read: %s" % (path, e.strerror))
        return 1
    missing = [phrase for phrase in REQUIRED if phrase not in text]
    for phrase in missing:
        print("%s: not the Apache License 2.0 (missing %r)" % (path, phrase))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "LICENSE"))
