#!/usr/bin/env bash
# Fills docker/wheelhouse/VARIANT with every wheel the image installs: torch and torchvision (the
# versions pyproject.toml pins), then Foldwise's dependencies, all at docker/constraints.txt's
# versions. The image build installs from it alone (no index): it needs no network, no certificate
# for a proxy, and never downloads torch's gigabytes; pip here takes them from its cache or any local
# index it is configured with. Wheels for the image's Python (IMAGE_PYTHON, default 3.11.2: bookworm's)
# and this machine's CPU architecture (x86_64 or aarch64: build the image on the same). Needs python3
# with pip and packaging.
#   docker/wheelhouse.sh cpu|cuda      torch is fetched once (REFRESH=1: again); the rest is checked
# cuda: PyPI's torch build (CUDA 13 libraries as pip packages; the host needs only the NVIDIA driver).
# cpu: PyTorch's CPU build from TORCH_CPU_INDEX (https://download.pytorch.org/whl/cpu), about 3 GB
# smaller. Where that index cannot be reached, the CUDA build goes in instead, with a warning: it
# runs on a CPU too.
set -euo pipefail
variant=${1:?usage: docker/wheelhouse.sh cpu|cuda}
here=$(cd "$(dirname "$0")" && pwd)
dest=$here/wheelhouse/$variant
extras=${FOLDWISE_EXTRAS:-kaggle}  # as the Dockerfile's build argument
# Binary wheels only, resolved for the image's Python: its markers and Requires-Python, not this one's.
download=(python3 -m pip download --disable-pip-version-check --dest "$dest" --only-binary=:all:
    --python-version "${IMAGE_PYTHON:-3.11.2}" --implementation cp --constraint "$here/constraints.txt")
[[ $variant == cpu || $variant == cuda ]] || { echo "error: variant must be cpu or cuda, not '$variant'" >&2; exit 2; }

requirements() {  # pyproject.toml's dependencies and those of the extras, one a line
    python3 -c 'import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = [extra for extra in sys.argv[2].split(",") if extra]
print("\n".join(project["dependencies"] + [d for e in extras for d in project["optional-dependencies"][e]]))' \
        "$here/../pyproject.toml" "$extras"
}
pinned() {  # pinned torch  ->  2.14.1
    requirements | sed -n "s/^$1==//p"
}
torch=$(pinned torch)
torchvision=$(pinned torchvision)
mkdir -p "$dest"

if [[ -n ${REFRESH:-} ]] || ! compgen -G "$dest/torch-$torch[-+]*.whl" >/dev/null \
    || ! compgen -G "$dest/torchvision-$torchvision[-+]*.whl" >/dev/null; then
    rm -f "$dest"/torch-*.whl "$dest"/torchvision-*.whl
    # cpu: the local version (+cpu) is the CPU build. --no-deps: they come with the rest below.
    cpu_index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
    if [[ $variant == cpu ]] && ! python3 -m pip download --disable-pip-version-check --no-deps --quiet \
        --dest "$dest" --retries 1 --timeout 20 --index-url "$cpu_index" \
        "torch==$torch+cpu" "torchvision==$torchvision+cpu" 2>"$dest/cpu-index.log"; then
        echo "warning: no CPU build of torch $torch at $cpu_index (pip's answer: $dest/cpu-index.log):" \
            "the cpu image gets the CUDA build (runs on a CPU; about 3 GB of CUDA libraries more)" >&2
    fi
    if ! compgen -G "$dest/torch-*.whl" >/dev/null; then
        "${download[@]}" --no-deps "torch==$torch" "torchvision==$torchvision"
    fi
fi
summary() { echo "wheelhouse $dest: $(find "$dest" -name '*.whl' | wc -l) wheels, $(du -sh "$dest" | cut -f1)$1"; }
# Resolving takes a minute even when nothing is missing: skipped while its inputs are those of the last
# complete resolution.
resolution_inputs() { requirements; cat "$here/constraints.txt"; echo "${IMAGE_PYTHON:-3.11.2}"; ls "$dest"; }
if [[ -z ${REFRESH:-} && -f $dest/.resolved && $(cat "$dest/.resolved") == "$(resolution_inputs | sha256sum)" ]]; then
    summary " (up to date)"
    exit 0
fi
# torch and torchvision as the files above (a requirement `torch==X` is met by X+cpu), everything else
# resolved around them; wheels already here are kept.
"${download[@]}" "$dest"/torch-*.whl "$dest"/torchvision-*.whl --requirement <(requirements)
# pip resolved with this Python's markers; add what the image's Python needs beyond that.
mapfile -t roots < <(requirements)
while missing=$(python3 "$here/wheelhouse_missing.py" "$dest" "${IMAGE_PYTHON:-3.11.2}" "${roots[@]}") \
    && [[ -n $missing ]]; do
    echo "for Python ${IMAGE_PYTHON:-3.11.2}:" $missing
    mapfile -t lacking <<<"$missing"
    "${download[@]}" "${lacking[@]}"
done
resolution_inputs | sha256sum >"$dest/.resolved"
summary ""
