#!/usr/bin/env bash
# sacct stand-in for the local cluster (no slurmdbd => real sacct says
# "Slurm accounting storage is disabled" and exits 1).
#
# It first runs the real sacct; only if that fails because accounting is
# disabled does it answer from `scontrol show job -o` (finished jobs stay in
# slurmctld memory for MinJobAge seconds) and, for older jobs, from the
# jobcomp/filetxt log (JobCompLoc).  Output format follows sacct for the
# options submitit and simple scripts use:
#   -j/--jobs ID[,ID...] (repeatable; ID, ID_TASK or array ID)
#   -o/--format FIELD[,FIELD...]   (JobID JobIDRaw JobName State ExitCode NodeList
#                                   Partition User Account QOS Start End Submit
#                                   Elapsed Timelimit AllocCPUS Reason Restarts WorkDir)
#   -P/--parsable2, -p/--parsable, -n/--noheader, -b/--brief
# Everything else (-X, -a, -S, -E, -u, ...) is accepted and ignored; there are
# no job-step lines.  `bash slurm/local-cluster.sh start` links this file to
# $SLURM_LOCAL_STATE/bin/sacct; put that folder first on PATH to use it.
set -uo pipefail

REAL="${SACCT_SHIM_REAL:-/usr/bin/sacct}"
if [[ -x "$REAL" ]]; then
    err="$(mktemp)"
    if out="$("$REAL" "$@" 2>"$err")"; then
        [[ -n "$out" ]] && printf '%s\n' "$out"
        cat "$err" >&2
        rm -f "$err"
        exit 0
    fi
    rc=$?
    if ! grep -qi "accounting storage is disabled" "$err"; then
        [[ -n "$out" ]] && printf '%s\n' "$out"
        cat "$err" >&2
        rm -f "$err"
        exit "$rc"
    fi
    rm -f "$err"
fi

fields="JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode"
sep="" header=1 trailing=0
ids=()
while (($#)); do
    case "$1" in
        -o | --format) fields="$2"; shift ;;
        -o* ) fields="${1#-o}" ;;
        --format=*) fields="${1#--format=}" ;;
        -j | --jobs) IFS=, read -ra more <<<"$2"; ids+=("${more[@]}"); shift ;;
        -j*) IFS=, read -ra more <<<"${1#-j}"; ids+=("${more[@]}") ;;
        --jobs=*) IFS=, read -ra more <<<"${1#--jobs=}"; ids+=("${more[@]}") ;;
        -P | --parsable2) sep="|" trailing=0 ;;
        -p | --parsable) sep="|" trailing=1 ;;
        -n | --noheader) header=0 ;;
        -b | --brief) fields="JobID,State,ExitCode" ;;
        -S | -E | -u | -A | -s | -M | -r | -N | -i | -I | -k | -K | -q | -W | -x | -C | -g | --starttime | --endtime | --user | --uid | --accounts | --state | --clusters | --partition | --name | --nodelist | --qos | --constraints | --group | --gid)
            shift ;;  # options with a value we ignore
        *) ;;         # flags we ignore (-X, -a, -L, -D, ...)
    esac
    shift
done

records() {
    local id out found
    if ((${#ids[@]} == 0)); then
        scontrol show job -o 2>/dev/null | sed 's/^/S /'
        return
    fi
    local jobcomp=""
    for id in "${ids[@]}"; do
        [[ -n "$id" ]] || continue
        id="${id%%.*}"   # drop a step suffix
        out="$(scontrol show job -o "$id" 2>/dev/null || true)"
        if [[ -n "$out" && "$out" == JobId=* ]]; then
            printf '%s\n' "$out" | sed 's/^/S /'
            continue
        fi
        # Not in slurmctld memory any more: look in the jobcomp text log.
        if [[ -z "$jobcomp" ]]; then
            jobcomp="$(scontrol show config 2>/dev/null | awk -F' = ' '/^JobCompLoc/ {print $2}')"
            jobcomp="${jobcomp:-/dev/null}"
        fi
        [[ -r "$jobcomp" ]] || continue
        if [[ "$id" == *_* ]]; then
            found="$(grep -E " ArrayJobId=${id%%_*} ArrayTaskId=${id#*_} " "$jobcomp" || true)"
        else
            found="$(grep -E "^JobId=$id | ArrayJobId=$id " "$jobcomp" || true)"
        fi
        [[ -n "$found" ]] && printf '%s\n' "$found" | sed 's/^/C /'
    done
}

records | awk -v fields="$fields" -v sep="$sep" -v header="$header" -v trailing="$trailing" '
function canon(f,   l) {
    l = tolower(f)
    if (l in CANON) return CANON[l]
    return f
}
function value(f,   l, v) {
    l = tolower(f)
    if (l == "jobid") {
        if (kv["ArrayJobId"] != "" && kv["ArrayTaskId"] != "") {
            if (kv["ArrayTaskId"] ~ /^[0-9]+$/) return kv["ArrayJobId"] "_" kv["ArrayTaskId"]
            return kv["ArrayJobId"] "_[" kv["ArrayTaskId"] "]"
        }
        return kv["JobId"]
    }
    if (l == "jobidraw") return kv["JobId"]
    if (l == "jobname") return (kv["JobName"] != "" ? kv["JobName"] : kv["Name"])
    if (l == "state") return kv["JobState"]
    if (l == "exitcode") return kv["ExitCode"]
    if (l == "nodelist") { v = kv["NodeList"]; return (v == "(null)" || v == "") ? "None assigned" : v }
    if (l == "partition") return kv["Partition"]
    if (l == "user") { v = kv["UserId"]; sub(/\(.*/, "", v); return v }
    if (l == "account") { v = kv["Account"]; return v == "(null)" ? "" : v }
    if (l == "qos") { v = kv["QOS"]; return v == "(null)" ? "" : v }
    if (l == "start") return kv["StartTime"]
    if (l == "end") return kv["EndTime"]
    if (l == "submit") return kv["SubmitTime"]
    if (l == "elapsed") return kv["RunTime"]
    if (l == "timelimit") return kv["TimeLimit"]
    if (l == "alloccpus" || l == "ncpus") return (kv["NumCPUs"] != "" ? kv["NumCPUs"] : kv["ProcCnt"])
    if (l == "reason") return kv["Reason"]
    if (l == "restarts") return kv["Restarts"]
    if (l == "workdir") return kv["WorkDir"]
    return ""
}
function emit(arr, n,   i, line) {
    line = ""
    for (i = 1; i <= n; i++) {
        if (sep != "") line = line (i > 1 ? sep : "") arr[i]
        else line = line sprintf("%-20s ", substr(arr[i], 1, 20))
    }
    if (sep != "" && trailing) line = line sep
    print line
}
BEGIN {
    split("JobID JobIDRaw JobName State ExitCode NodeList Partition User Account QOS Start End Submit Elapsed Timelimit AllocCPUS NCPUS Reason Restarts WorkDir", names, " ")
    for (i in names) CANON[tolower(names[i])] = names[i]
    nf = split(fields, F, ",")
    for (i = 1; i <= nf; i++) { sub(/%.*/, "", F[i]); H[i] = canon(F[i]) }
    if (header) emit(H, nf)
    nrec = 0
}
{
    src = $1
    delete kv
    last = ""
    for (i = 2; i <= NF; i++) {
        p = index($i, "=")
        if (p > 1) { last = substr($i, 1, p - 1); kv[last] = substr($i, p + 1) }
        else if (last != "") kv[last] = kv[last] " " $i
    }
    id = value("jobid")
    for (i = 1; i <= nf; i++) row[i] = value(F[i])
    line = ""
    for (i = 1; i <= nf; i++) line = line "\t" row[i]
    if (!(id in seen)) { seen[id] = ++nrec; order[nrec] = id }
    # slurmctld (S) records win over jobcomp (C); among jobcomp records the last one wins
    if (src == "S" || !(id in from) || from[id] == "C") { out[id] = line; from[id] = src }
}
END {
    for (r = 1; r <= nrec; r++) {
        n = split(substr(out[order[r]], 2), row, "\t")
        emit(row, nf)
    }
}'
