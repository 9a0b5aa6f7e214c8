# Chaos campaign (scripts/chaos.sh): what is checked after each interruption and each finished run, against
# the uninterrupted reference run of the same world size (a checkpoint at every step, none pruned). Sourced;
# uses the driver's globals (ranks, keep, max_steps, ck, run_dir, ref, expected_resume) and its counters.

# problem <category> <message>: counts it (lost, difference, leftover, failure) and, unless --keep-going,
# prints the summary and stops.
problem() {
  bump "$1"
  problem_count=$((problem_count + 1))
  echo "  PROBLEM ($1, ${ranks} rank(s), async $async, $(basename "$run_dir")): $2" | tee -a "$work/problems.txt"
  if ! $keep_going; then summary; exit 1; fi
}

# same_checkpoint <dir> <step>: the rank files byte for byte, the files' records in COMPLETE and meta.json
# (but the keys the campaign sets otherwise than the reference) equal the reference's checkpoint of the step.
same_checkpoint() {
  local dir=$1 step=$2 theirs f
  theirs=$ref/checkpoints/$(printf 'step_%08d' "$step")
  [ -f "$theirs/COMPLETE" ] || { echo "the reference has no checkpoint of step $step"; return 1; }
  for f in "$theirs"/rank_*.bin; do
    cmp -s "$f" "$dir/${f##*/}" || { echo "${f##*/} differs from the reference's"; return 1; }
  done
  [ "$(grep -o '"files":\[[^]]*\]' "$dir/COMPLETE")" == "$(grep -o '"files":\[[^]]*\]' "$theirs/COMPLETE")" ] ||
    { echo "COMPLETE lists other files than the reference's"; return 1; }
  local skip='"(async|interval|keep_last|run_dir)":'
  diff -q <(grep -Ev "$skip" "$dir/meta.json") <(grep -Ev "$skip" "$theirs/meta.json") > /dev/null ||
    { echo "meta.json differs from the reference's"; return 1; }
}

# After a strike, a full disk or a stop, once the job has ended: every complete checkpoint equals the
# reference's; every one complete when the job was struck is still there unless keep_last allowed its pruning
# (keep_last newer ones are complete); the next --resume auto must take the newest.
check_interruption() {
  local now s d why newer
  now=$(complete_steps)
  for s in $now; do
    d=$ck/$(printf 'step_%08d' "$s")
    why=$(same_checkpoint "$d" "$s") || problem lost "complete checkpoint $d is damaged: $why"
  done
  for s in $complete_before; do
    [[ " $now " == *" $s "* ]] && continue
    newer=0
    for d in $now; do ((d > s)) && newer=$((newer + 1)); done
    ((newer >= keep)) || problem lost "checkpoint of step $s was complete before the $what and is gone (only $newer newer complete)"
  done
  expected_resume=0
  for s in $now; do expected_resume=$s; done
}

# check_resume_choice <log>: a segment started with --resume auto took the newest complete checkpoint (none
# damaged, so none renamed .corrupt). A segment struck before it chose says nothing.
check_resume_choice() {
  local log=$1 took=""
  if grep -q "no complete checkpoint in" "$log"; then took=0
  else took=$(grep -o 'resumed from .* (step [0-9]*' "$log" | grep -o '[0-9]*$'); fi
  [ -z "$took" ] && return
  ((took == expected_resume)) ||
    problem lost "--resume auto took step $took but step $expected_resume was the newest complete checkpoint"
  if glob_exists "$ck/*.corrupt*"; then problem lost "checkpoints renamed .corrupt: $(cd "$ck" && echo *.corrupt*)"; fi
}

# leftovers <run dir>: what a run directory should not hold: anything but config.json, metrics.jsonl, run.lock
# and complete checkpoints holding COMPLETE, meta.json and rank files (staging, trash, temporary files).
leftovers() {
  local e f
  for e in "$1"/* "$1"/.[!.]*; do
    [ -e "$e" ] || continue
    case ${e##*/} in config.json | metrics.jsonl | run.lock | checkpoints) ;; *) echo "$e" ;; esac
  done
  for e in "$1"/checkpoints/* "$1"/checkpoints/.[!.]*; do
    [ -e "$e" ] || continue
    if [[ ${e##*/} =~ ^step_[0-9]{8}$ && -f $e/COMPLETE ]]; then
      for f in "$e"/* "$e"/.[!.]*; do
        [ -e "$f" ] || continue
        [[ ${f##*/} =~ ^(COMPLETE|meta\.json|rank_[0-9]{5}\.bin)$ ]] || echo "$f"
      done
    else
      echo "$e"
    fi
  done
}

# check_leftovers <when>: none in the current run directory.
check_leftovers() {
  local left
  left=$(leftovers "$run_dir")
  [ -z "$left" ] || problem leftover "$1: $(echo $left)"
}

# The metrics of a finished run against the reference's: every line a whole record; every loss, grad_norm
# and val_loss logged (by every segment, repeated steps included) equal, as written, to the reference's of
# the same step; every step 1..max_steps logged. Prints the differences; the count of values compared last.
compare_metrics() {
  perl -e '
    my ($ref, $run, $max) = @ARGV;
    my @keys = ("loss", "grad_norm", "val_loss");
    my (%want, %seen);
    open(my $r, "<", $ref) or die "$ref: $!";
    while (<$r>) {
      my ($s) = /"step":(\d+)/;
      for my $k (@keys) { $want{"$s $k"} = $1 if /"$k":([^,}]+)/ }
    }
    my ($bad, $n) = (0, 0);
    open(my $h, "<", $run) or die "$run: $!";
    while (<$h>) {
      if (!/^\{.*\}\n\z/) { print "a partial line: $_\n"; $bad++; next }
      my ($s) = /"step":(\d+)/;
      for my $k (@keys) {
        next unless /"$k":([^,}]+)/;
        $n++;
        $seen{$s} = 1 if $k eq "loss";
        my $w = $want{"$s $k"} // "none";
        if ($w ne $1) { print "step $s $k $1, reference $w\n"; $bad++ }
      }
    }
    for my $s (1 .. $max) { if (!$seen{$s}) { print "step $s has no loss record\n"; $bad++ } }
    print "$n\n";
    exit($bad ? 1 : 0);' "$ref/metrics.jsonl" "$run_dir/metrics.jsonl" "$max_steps"
}

# A run that reached max_steps: its metrics, its final checkpoint, its run directory.
check_finished_run() {
  local out why last
  bump runs
  if out=$(compare_metrics); then
    bump values "$(tail -n 1 <<< "$out")"
  else
    problem difference "metrics.jsonl: $(head -n -1 <<< "$out" | head -n 5 | tr '\n' ';')"
  fi
  last=$ck/$(printf 'step_%08d' "$max_steps")
  if [ ! -f "$last/COMPLETE" ]; then
    problem difference "no complete checkpoint of the last step $max_steps"
  elif ! why=$(same_checkpoint "$last" "$max_steps"); then
    problem difference "final checkpoint: $why"
  fi
  check_leftovers "after the final resume"
  local n; n=$(complete_steps | wc -w)
  ((keep == 0 || n <= keep)) || problem leftover "$n complete checkpoints, keep_last is $keep"
}
