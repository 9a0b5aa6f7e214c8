# shellcheck shell=bash
# Shared by the parity scripts (optim_states_parity.sh, recipes_parity.sh), which source it from the
# repository root after setting their defaults of device, steps, config and out.
#   parity_parse_args "$@"  reads --device cpu|cuda, --steps N, --config FILE, --out DIR and repeatable
#                           --set section.key=value (kept in the array extra, passed to every run); an unknown
#                           or invalid argument exits with status 2. Creates OUT.
#   parity_train NAME ARGS  trains the config for `steps` steps into OUT/NAME (removed first; log OUT/NAME.log)
#                           with the --set pairs, then ARGS (the run's own settings); on failure prints the
#                           log's tail and exits 1.
#   parity_plot PNG RUNS    draws the runs' curves into PNG with scripts/plot_metrics.py, under the first python3
#                           (PATH's, else the system's) that has matplotlib.
build_dir=${COAT_BUILD_DIR:-build}

# shellcheck disable=SC2034  # device, steps, config and out are the caller's
parity_parse_args() {
  local name
  name=$(basename "$0")
  extra=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --device) device=$2; shift 2 ;;
      --steps) steps=$2; shift 2 ;;
      --config) config=$2; shift 2 ;;
      --out) out=$2; shift 2 ;;
      --set) extra+=(--set "$2"); shift 2 ;;
      *) echo "$name: unknown argument '$1'" >&2; exit 2 ;;
    esac
  done
  case "$device" in cpu|cuda) ;; *) echo "$name: --device must be cpu or cuda, not '$device'" >&2; exit 2 ;; esac
  case "$steps" in ''|*[!0-9]*|0) echo "$name: --steps must be a positive integer, not '$steps'" >&2; exit 2 ;; esac
  mkdir -p "$out"
}

parity_train() {
  local run=$1
  shift
  rm -rf "${out:?}/$run"
  echo "training $run ($steps steps on $device; log: $out/$run.log)"
  "$build_dir/coat-train" --config "$config" --device "$device" --set train.max_steps="$steps" \
    --set train.eval_interval=$((steps / 4)) --set checkpoint.interval=0 --set logging.progress=off \
    ${extra[@]+"${extra[@]}"} "$@" --set logging.run_dir="$out/$run" >"$out/$run.log" 2>&1 ||
    { tail -20 "$out/$run.log"; exit 1; }
}

parity_plot() {
  local png=$1 py
  shift
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -c "import matplotlib" 2>/dev/null; then
      "$py" scripts/plot_metrics.py "$@" -o "$png" || echo "(plot failed)"
      return 0
    fi
  done
  echo "(plot skipped: no python3 with matplotlib; Debian/Ubuntu: apt-get install python3-matplotlib)"
}
