# Chaos campaign (scripts/chaos.sh): starting coat-train segments, finding their ranks, and striking them at
# chosen moments. Sourced; uses the driver's globals: ranks, async, program, config, common, mpiexec,
# mpi_flags, interval, keep, work, ck (the current run's checkpoints directory).

# A sleep without a fork: a read that times out on a FIFO nobody writes.
mkfifo "$work/.nap"
exec {nap_fd}<>"$work/.nap"
nap() { read -r -t "$1" -u "$nap_fd" _ || :; }
nap_ms() { nap "$(($1 / 1000)).$(printf '%03d' $(($1 % 1000)))"; }

rand_below() { echo $(( (RANDOM * 32768 + RANDOM) % $1 )); }  # uniform in [0, $1), $1 < 2^30
pick() { local a=("$@"); echo "${a[$(rand_below ${#a[@]})]}"; }
now_ms() { local t=$EPOCHREALTIME; echo $(( ${t%.*} * 1000 + 10#${t#*.} / 1000 )); }
glob_exists() { compgen -G "$1" > /dev/null; }  # a builtin: no fork in the polling loops

# start_segment <run dir> <log> [args...]: coat-train (under mpirun when ranks > 1) in the background, with
# the campaign's settings; its pid in $job. CHAOS_FSIZE_KB (the full-disk fallback) caps every file it writes.
start_segment() {
  local run=$1 log=$2; shift 2
  local cmd=()
  ((ranks > 1)) && cmd=("$mpiexec" "${mpi_flags[@]}" -np "$ranks")
  cmd+=("$program" --config "$config" "${common[@]}" --set checkpoint.async="$async"
        --set checkpoint.interval="$interval" --set checkpoint.keep_last="$keep"
        --set logging.run_dir=\""$run"\" "$@")
  if [ -n "${CHAOS_FSIZE_KB:-}" ]; then
    (ulimit -f "$CHAOS_FSIZE_KB"; trap '' XFSZ; exec "${cmd[@]}") > "$log" 2>&1 &
  else
    "${cmd[@]}" > "$log" 2>&1 &
  fi
  job=$!
  segment_started_ms=$(now_ms)
  rank_pid=()
}

job_alive() { kill -0 "$job" 2> /dev/null; }

# find_ranks: fills rank_pid[r] for every rank of the job (mpirun's children by OMPI_COMM_WORLD_RANK); false
# when the job ended first.
find_ranks() {
  ((${#rank_pid[@]} == ranks)) && return 0
  if ((ranks == 1)); then rank_pid=([0]="$job"); return 0; fi
  while job_alive; do
    local pid r
    for pid in $(pgrep -P "$job"); do
      r=$(tr '\0' '\n' < "/proc/$pid/environ" 2> /dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
      [ -n "$r" ] && rank_pid[$r]=$pid
    done
    ((${#rank_pid[@]} == ranks)) && return 0
    nap 0.01
  done
  return 1
}

# choose_victims <who>: rank0 | any (one rank at random, or every rank: a lost node) | all.
choose_victims() {
  local who=$1
  if ((ranks == 1)); then victims=("${rank_pid[0]}"); victim_names="rank 0"; return; fi
  [ "$who" == any ] && who=$(pick rank0 one one all)
  case $who in
    rank0) victims=("${rank_pid[0]}"); victim_names="rank 0" ;;
    one) local r; r=$(rand_below "$ranks"); victims=("${rank_pid[$r]}"); victim_names="rank $r" ;;
    all) victims=("${rank_pid[@]}"); victim_names="every rank" ;;
  esac
}

# What the run directory shows at the moment of a strike: a staging directory with a rank file being
# written (write), a staging directory (staging), a checkpoint being pruned (prune), config.json being written
# (start), else nothing (step).
moment_of() {
  if glob_exists "$ck/step_*.trash"; then echo prune
  elif glob_exists "$ck/step_*.tmp/*.tmp.*"; then echo write
  elif glob_exists "$ck/step_*.tmp"; then echo staging
  elif glob_exists "$run_dir/config.json.tmp.*"; then echo start
  else echo step; fi
}

# strike <signal> [condition...]: freezes the victims (SIGSTOP), and when the condition (a command) still holds
# sends them <signal>, noting the complete checkpoints (complete_before) and the moment (struck_at); else
# lets them go on. SIGSTOP first makes the look at the run directory exact: a frozen process writes nothing.
strike() {
  local signal=$1; shift
  kill -STOP "${victims[@]}" 2> /dev/null || return 1
  if (($#)) && ! "$@"; then kill -CONT "${victims[@]}" 2> /dev/null; return 1; fi
  complete_before=$(complete_steps)
  struck_at=$(moment_of)
  kill "-$signal" "${victims[@]}" 2> /dev/null
  [ "$signal" != KILL ] && kill -CONT "${victims[@]}" 2> /dev/null
  struck_ms=$(now_ms)
  return 0
}

# The steps of the complete checkpoints of the current run, oldest first.
complete_steps() {
  local d s out=()
  for d in "$ck"/step_????????; do
    [ -f "$d/COMPLETE" ] || continue
    s=${d##*/step_}; out+=($((10#$s)))
  done
  echo "${out[*]}"
}

metrics_lines() { [ -f "$run_dir/metrics.jsonl" ] && wc -l < "$run_dir/metrics.jsonl" || echo 0; }

# fire <kind>: waits for the kind's moment in the running segment and strikes; false when the job ended first.
#   random  kill -9 after a random delay within the segment's expected length
#   step    kill -9 at a random point of a training step
#   save    kill -9 while a checkpoint is being saved (its staging directory exists; COMPLETE is not in place)
#   prune   kill -9 of rank 0 while an old checkpoint is being deleted (a .trash directory exists)
#   start   kill -9 of rank 0 while it writes config.json at the start (a config.json.tmp.<pid> exists)
#   bgwrite kill -9 while the async saver writes in the background and training went on (the saved step's
#           metrics line is written)
#   sigterm SIGTERM (to one rank, rank 0, or every rank) after a random delay
fire() {
  local kind=$1 until_ms
  find_ranks || return 1
  case $kind in
    random | sigterm)
      # Within the segment's expected length: its start-up and the steps left after the checkpoint it resumes.
      until_ms=$((segment_started_ms + $(rand_below $((startup_ms + (max_steps - expected_resume) * step_ms)))))
      while job_alive && (($(now_ms) < until_ms)); do nap 0.005; done
      job_alive || return 1
      choose_victims any
      if [ "$kind" == sigterm ]; then strike TERM; else strike KILL; fi ;;
    step)
      local lines; lines=$(metrics_lines)
      while job_alive && (($(metrics_lines) <= lines)); do nap 0.002; done
      nap_ms "$(rand_below "$step_ms")"
      choose_victims any
      strike KILL job_alive ;;
    save)
      choose_victims any
      while job_alive; do
        if glob_exists "$ck/step_*.tmp"; then
          (($(rand_below 2))) && nap_ms "$(rand_below 10)"
          strike KILL glob_exists "$ck/step_*.tmp" && return 0
        fi
        nap 0.0005
      done
      return 1 ;;
    prune)
      choose_victims rank0
      while job_alive; do
        glob_exists "$ck/step_*.trash" && strike KILL glob_exists "$ck/step_*.trash" && return 0
        nap 0.0001
      done
      return 1 ;;
    start)
      choose_victims rank0
      while job_alive; do
        glob_exists "$run_dir/config.json.tmp.*" && strike KILL glob_exists "$run_dir/config.json.tmp.*" && return 0
        nap 0.0001
      done
      return 1 ;;
    bgwrite)
      choose_victims any
      while job_alive; do
        if saving_step_logged; then strike KILL saving_step_logged && return 0; fi
        nap 0.0005
      done
      return 1 ;;
    *) echo "chaos: unknown kind $kind" >&2; exit 2 ;;
  esac
}

# A staging directory exists and this segment wrote the metrics line of its step: the save runs in the
# background.
saving_step_logged() {
  glob_exists "$ck/step_*.tmp" || return 1
  local staging
  for staging in "$ck"/step_*.tmp; do break; done
  staging=${staging##*/step_}; staging=${staging%.tmp}
  grep -q "\"step\":$((10#$staging))," < <(tail -n +$((segment_lines + 1)) "$run_dir/metrics.jsonl" 2> /dev/null)
}

# wait_job <seconds>: waits for the job; its exit status in $status (124: still running, then killed).
wait_job() {
  local deadline=$(($(now_ms) + $1 * 1000))
  while job_alive && (($(now_ms) < deadline)); do nap 0.02; done
  if job_alive; then
    pkill -KILL -P "$job" 2> /dev/null; kill -KILL "$job" 2> /dev/null; wait "$job" 2> /dev/null
    status=124
    return
  fi
  wait "$job" 2> /dev/null
  status=$?
  # Under mpirun every rank is gone before the next segment takes the run directory's lock.
  local pid
  for pid in "${rank_pid[@]}"; do while kill -0 "$pid" 2> /dev/null; do nap 0.01; done; done
}
