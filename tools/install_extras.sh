#!/usr/bin/env bash
# Install the optional extras into the active Python environment:
#   lm       KenLM language-model decoding: pyctcdecode + kenlm, and KenLM's
#            lmplz / build_binary (to train an n-gram LM from a text file)
#   phoneme  phoneme targets: espeak-ng + phonemizer
#   granite  torchaudio for Granite Speech's feature extractor (pure-Python
#            parts only beside a torch that has no matching torchaudio build)
#   report   Chromium, to check report.html in a real (headless) browser in
#            tests/test_report.py; report.py itself needs no browser
#   augment  audiomentations, for --noise_dir and --rir_dir (noise and room
#            reverberation); --speed_perturbation needs nothing extra
#   onnx     onnx + onnxruntime + onnxscript, for export_onnx.py (ONNX export,
#            int8 quantization) and transcribe.py --onnx
#
# Usage:  bash tools/install_extras.sh [lm] [phoneme] [granite] [report] [augment] [onnx]   (no argument: all)
#
# The environment is $VIRTUAL_ENV when one is active, else the python on PATH.
# Idempotent: what is already installed is skipped, so a second run only
# re-checks. Debian packages are installed with apt-get when we are root;
# otherwise the script prints the apt-get command to run and exits 1.
set -euo pipefail

PYCTCDECODE_VERSION=0.5.0
AUDIOMENTATIONS_VERSION=0.43.1
ONNX_VERSION=1.23.2 ONNXRUNTIME_VERSION=1.32.0 ONNXSCRIPT_VERSION=0.7.2
KENLM_VERSION=0.3.0
# Debian packages needed to compile lmplz / build_binary (and, for zlib/bz2/xz,
# let the kenlm Python module read compressed ARPA files).
LM_APT_PACKAGES=(cmake build-essential libboost-program-options-dev libboost-system-dev
                 libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev)

say() { echo "extras: $*"; }
die() { echo "extras: ERROR: $*" >&2; exit 1; }

# --- which parts ------------------------------------------------------------
want_lm=0 want_phoneme=0 want_granite=0 want_report=0 want_augment=0 want_onnx=0
[[ $# -eq 0 ]] && set -- lm phoneme granite report augment onnx
for part in "$@"; do
  case "$part" in
    lm) want_lm=1 ;;
    phoneme) want_phoneme=1 ;;
    granite) want_granite=1 ;;
    report) want_report=1 ;;
    augment) want_augment=1 ;;
    onnx) want_onnx=1 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown part '$part' (expected: lm, phoneme, granite, report, augment, onnx)" ;;
  esac
done

# --- the target environment -------------------------------------------------
if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  PY="$(command -v python || command -v python3)" || die "no python on PATH"
fi
# Console scripts of this environment live next to its interpreter: lmplz goes
# there too, so it is on PATH whenever the environment is active.
BIN_DIR="$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")"
say "python: $PY"

pip_q() { "$PY" -m pip install -q "$@"; }
has_module() { "$PY" -c "import $1" >/dev/null 2>&1; }
has_dist() {  # has_dist NAME VERSION: is exactly that version installed?
  "$PY" - "$1" "$2" <<'EOF' >/dev/null 2>&1
import sys, importlib.metadata as md
sys.exit(md.version(sys.argv[1]) != sys.argv[2])
EOF
}

# Scratch space, removed on exit.
TMP="$(mktemp -d "${TMPDIR:-/tmp}/extras.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# Run a noisy command with its output in a log; show the log's tail on failure.
logged() {
  local log="$TMP/$1.log"; shift
  "$@" >"$log" 2>&1 || { tail -n 40 "$log" >&2; die "failed: $*"; }
}

# --- Debian packages ----------------------------------------------------------
apt_updated=0
apt_install() {  # apt_install PKG...: install those not installed yet
  local missing=() p
  if ! command -v dpkg-query >/dev/null; then
    say "not a Debian/Ubuntu system: make sure these (or their equivalents) are installed: $*"
    return 0
  fi
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "extras: missing Debian packages; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  if [[ $apt_updated -eq 0 ]]; then
    say "apt-get update"
    logged apt-update apt-get update -q
    apt_updated=1
  fi
  say "apt-get install ${missing[*]}"
  logged apt-install env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# --- part 1: language-model decoding -----------------------------------------
install_lm() {
  if ! has_module numpy; then  # pyctcdecode imports numpy; it is not pulled in below
    say "pip install numpy"
    pip_q numpy
  fi

  # pyctcdecode declares numpy<2: a normal install would downgrade numpy and
  # break pandas/datasets built against numpy 2. It runs fine on numpy 2, so
  # install it with --no-deps and add its one runtime dependency (pygtrie) by
  # hand, first; its other declared dependency, hypothesis, is only used by its
  # tests. (`pip check` will keep reporting both: expected.)
  if ! has_module pygtrie; then
    say "pip install pygtrie"
    pip_q pygtrie
  fi
  if ! has_dist pyctcdecode "$PYCTCDECODE_VERSION"; then
    say "pip install pyctcdecode==$PYCTCDECODE_VERSION (--no-deps)"
    pip_q --no-deps "pyctcdecode==$PYCTCDECODE_VERSION"
  fi

  local need_module=0 need_bins=0
  has_module kenlm || need_module=1
  [[ -x "$BIN_DIR/lmplz" && -x "$BIN_DIR/build_binary" ]] || need_bins=1

  if [[ $need_module -eq 1 || $need_bins -eq 1 ]]; then
    # System libraries first, so the kenlm module is built with zlib/bz2/xz too.
    apt_install "${LM_APT_PACKAGES[@]}"

    if [[ $need_module -eq 1 ]]; then
      # PyPI has only an sdist: pip compiles the query module (pip caches the wheel).
      say "pip install kenlm==$KENLM_VERSION (compiles the Python module, about a minute)"
      logged kenlm-install "$PY" -m pip install "kenlm==$KENLM_VERSION"
    fi

    if [[ $need_bins -eq 1 ]]; then
      # The same sdist holds KenLM's full C++ source with its CMakeLists.
      # --no-build-isolation: the isolated metadata build once hung here. It
      # needs a setuptools that can build wheels in the environment (>= 70.1,
      # or older plus `wheel`); fresh venvs may lack that, so fall back then.
      say "downloading the kenlm==$KENLM_VERSION source"
      local iso=()
      if has_module setuptools.command.bdist_wheel || { has_module setuptools && has_module wheel; }; then
        iso=(--no-build-isolation)
      fi
      logged kenlm-download "$PY" -m pip download --no-deps --no-binary kenlm "${iso[@]}" \
        -d "$TMP" "kenlm==$KENLM_VERSION"
      local sdist="$TMP/kenlm-$KENLM_VERSION.tar.gz"
      [[ -f "$sdist" ]] || die "pip download did not produce $sdist"

      say "building lmplz and build_binary (about a minute)"
      tar -xzf "$sdist" -C "$TMP"
      local src="$TMP/kenlm-$KENLM_VERSION"
      logged cmake cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release
      logged make make -C "$src/build" -j2 lmplz build_binary
      [[ -w "$BIN_DIR" ]] || die "cannot write to $BIN_DIR (binaries are in $src/build/bin)"
      install -m 755 "$src/build/bin/lmplz" "$src/build/bin/build_binary" "$BIN_DIR/"
      say "installed lmplz and build_binary into $BIN_DIR"
    fi
  fi

  verify_lm
}

verify_lm() {
  say "checking kenlm, pyctcdecode and lmplz"
  "$PY" -c "import kenlm, pyctcdecode" || die "import kenlm, pyctcdecode failed"
  # lmplz --help exits non-zero after printing its usage: check that it prints it.
  local usage
  usage="$("$BIN_DIR/lmplz" --help 2>&1 || true)"
  [[ "$usage" == *--order* ]] || die "$BIN_DIR/lmplz does not run: $usage"

  # A 3-gram from five sentences, loaded by kenlm and used by a pyctcdecode decoder.
  printf '%s\n' "turn on the light" "turn off the light" "turn on the radio" \
    "open the door" "close the door" >"$TMP/corpus.txt"
  logged lmplz "$BIN_DIR/lmplz" -o 3 --discount_fallback -S 10% -T "$TMP" \
    --text "$TMP/corpus.txt" --arpa "$TMP/test.arpa"
  logged build_binary "$BIN_DIR/build_binary" "$TMP/test.arpa" "$TMP/test.bin"
  logged lm-check "$PY" - "$TMP/test.arpa" "$TMP/test.bin" <<'EOF'
import sys, logging
import numpy as np, kenlm
from pyctcdecode import build_ctcdecoder
logging.disable(logging.WARNING)  # pyctcdecode warns about the toy alphabet
for path in sys.argv[1:]:
    lm = kenlm.Model(path)
    assert lm.order == 3, lm.order
    assert lm.score("turn on the light") > lm.score("light the on turn")
labels = [""] + list(" abcdefghijklmnopqrstuvwxyz'")
decoder = build_ctcdecoder(labels, kenlm_model_path=sys.argv[1])
text = "turn on"
logits = np.full((len(text), len(labels)), -10.0, dtype=np.float32)
logits[np.arange(len(text)), [labels.index(c) for c in text]] = 0.0
assert decoder.decode(logits) == text, decoder.decode(logits)
EOF
  if [[ "$(command -v lmplz || true)" != "$BIN_DIR/lmplz" ]]; then
    say "note: $BIN_DIR is not on PATH; activate the environment to use lmplz"
  fi
  say "lm: OK"
}

# --- part 2: phoneme mode ------------------------------------------------------
install_phoneme() {
  if ! command -v espeak-ng >/dev/null; then
    apt_install espeak-ng
  fi
  if ! has_module phonemizer; then
    say "pip install phonemizer"
    pip_q phonemizer
  fi
  say "checking phonemizer with espeak-ng"
  "$PY" -c "from phonemizer import phonemize; print(phonemize(['hello world'], language='en-us', backend='espeak'))" \
    >"$TMP/phonemize.out" 2>&1 || { cat "$TMP/phonemize.out" >&2; die "phonemizer check failed"; }
  say "phoneme: OK ($(tail -n 1 "$TMP/phonemize.out"))"
}

# --- part 3: torchaudio for Granite Speech -----------------------------------
# GraniteSpeech5FeatureExtractor uses torchaudio's MelSpectrogram and compute_deltas, which are plain torch code.
# PyPI's torchaudio wheels for Linux (newest: 2.11.1) are CUDA builds tied to one torch release: beside any other torch
# (e.g. the CPU torch 2.13) their compiled libraries fail to load, and because transformers imports torchaudio whenever
# it is installed, a plain `pip install torchaudio` then breaks transformers' audio code as a whole. So: keep a
# torchaudio that imports; otherwise install the wheel without dependencies (it must never replace torch) and without
# its compiled libraries, which torchaudio then skips.
TORCHAUDIO_VERSION=2.11.1
torchaudio_works() {
  "$PY" -c "import torchaudio, torch; from torchaudio.transforms import MelSpectrogram;
from torchaudio.functional import compute_deltas; compute_deltas(MelSpectrogram(n_fft=512)(torch.zeros(1, 16000)))" \
    >/dev/null 2>&1
}
install_granite() {
  if torchaudio_works; then
    say "granite: torchaudio already works"
    return 0
  fi
  say "pip install torchaudio==$TORCHAUDIO_VERSION (--no-deps, without its compiled libraries)"
  pip_q --no-deps --force-reinstall "torchaudio==$TORCHAUDIO_VERSION"
  torchaudio_works || rm -f "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"/torchaudio/lib/*.so
  torchaudio_works || die "torchaudio still does not import; Granite Speech models will not load"
  if ! has_module transformers; then  # e.g. CI, which installs the extras before requirements.txt
    say "granite: OK (torchaudio imports; transformers not installed yet, so its feature extractor is not checked)"
    return 0
  fi
  "$PY" -c "from transformers import GraniteSpeech5FeatureExtractor as F; import numpy as np;
print(F()(np.zeros(16000, np.float32), sampling_rate=16000)['input_features'].shape)" >"$TMP/granite.out" 2>&1 \
    || { cat "$TMP/granite.out" >&2; die "GraniteSpeech5FeatureExtractor check failed"; }
  say "granite: OK (features $(tail -n 1 "$TMP/granite.out"))"
}

# --- part 4: a headless browser for the report test ---------------------------
# tests/test_report.py opens report.html in headless Chromium (a screenshot and the DOM); without a browser that test
# is skipped. Debian's package is `chromium`; Ubuntu's apt `chromium-browser` is only a wrapper around a snap, which
# does not run in containers, so there install Chromium another way and put `chromium` on PATH.
chromium_bin() { command -v chromium || command -v chromium-browser; }
install_report() {
  chromium_bin >/dev/null || apt_install chromium
  local bin
  bin="$(chromium_bin)" || die "chromium is not on PATH after installing it"
  say "checking $bin --headless"
  "$bin" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$TMP/chromium-profile" \
    --dump-dom 'data:text/html,<p>report-check</p>' \
    >"$TMP/chromium.out" 2>"$TMP/chromium.err" || { tail -n 20 "$TMP/chromium.err" >&2; die "$bin --headless failed"; }
  grep -q '<p>report-check</p>' "$TMP/chromium.out" || { cat "$TMP/chromium.out" >&2; die "$bin rendered no DOM"; }
  say "report: OK ($("$bin" --version 2>/dev/null | head -n 1))"
}

# --- part 5: noise and reverberation ------------------------------------------
# audiomentations declares soxr<1.0: a normal install would downgrade the soxr we resample with (and so change every
# resampled clip). It runs fine on soxr 1.x, so install it with --no-deps and add the runtime dependencies it imports
# by hand (librosa loads its noise and impulse-response files). (`pip check` will keep reporting soxr: expected.)
install_augment() {
  if ! has_module librosa || ! has_module numpy_minmax || ! has_module numpy_rms || ! has_module python_stretch; then
    say "pip install librosa numpy-minmax numpy-rms python-stretch scipy"
    pip_q librosa "numpy-minmax<1" "numpy-rms<1" "python-stretch<1" scipy
  fi
  if ! has_dist audiomentations "$AUDIOMENTATIONS_VERSION"; then
    say "pip install audiomentations==$AUDIOMENTATIONS_VERSION (--no-deps)"
    pip_q --no-deps "audiomentations==$AUDIOMENTATIONS_VERSION"
  fi
  "$PY" -c "from audiomentations import AddBackgroundNoise, ApplyImpulseResponse" || die "audiomentations does not import"
  say "augment: OK (audiomentations $AUDIOMENTATIONS_VERSION)"
}

# --- part 6: ONNX export -----------------------------------------------------------
# torch.onnx's exporter needs onnx and onnxscript; onnxruntime runs the graphs and quantizes them to int8.
install_onnx() {
  local missing=()
  has_dist onnx "$ONNX_VERSION" || missing+=("onnx==$ONNX_VERSION")
  has_dist onnxruntime "$ONNXRUNTIME_VERSION" || missing+=("onnxruntime==$ONNXRUNTIME_VERSION")
  has_dist onnxscript "$ONNXSCRIPT_VERSION" || missing+=("onnxscript==$ONNXSCRIPT_VERSION")
  if [[ ${#missing[@]} -gt 0 ]]; then
    say "pip install ${missing[*]}"
    pip_q "${missing[@]}"
  fi
  "$PY" -c "import onnx, onnxscript, onnxruntime.quantization" || die "onnx/onnxruntime/onnxscript do not import"
  say "onnx: OK (onnx $ONNX_VERSION, onnxruntime $ONNXRUNTIME_VERSION, onnxscript $ONNXSCRIPT_VERSION)"
}

[[ $want_lm -eq 1 ]] && install_lm
[[ $want_phoneme -eq 1 ]] && install_phoneme
[[ $want_granite -eq 1 ]] && install_granite
[[ $want_report -eq 1 ]] && install_report
[[ $want_augment -eq 1 ]] && install_augment
[[ $want_onnx -eq 1 ]] && install_onnx
say "done"
