"""update_keys.py CMLAB FILE...: replaces the generated key list between the keys:begin and
keys:end markers of each FILE with the output of `CMLAB train --keys-markdown` (the list that
tests/test_readme.c checks, and from which tools/cmlab_torch.py reads the key types)."""
import subprocess
import sys

BEGIN, END = "<!-- keys:begin", "<!-- keys:end -->"


def main(cmlab, paths):
    keys = subprocess.run([cmlab, "train", "--keys-markdown"], check=True, capture_output=True,
                          text=True).stdout
    for path in paths:
        text = open(path).read()
        b, e = text.index(BEGIN), text.index(END)
        b = text.index("\n", b) + 1          # keep the begin marker's line
        new = text[:b] + keys + text[e:]
        if new != text:
            open(path, "w").write(new)
            print("update_keys.py: updated", path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
