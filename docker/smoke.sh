#!/usr/bin/env bash
# `make docker-smoke`: the compose stack, end to end. Builds the images (base, wheelhouse, Foldwise,
# PostgreSQL), brings the stack up on loopback ports with throwaway passwords, starts a run of
# retrain/demo through the Prefect API as the UI's Run button does, waits for it to complete, then
# checks the run, its metrics, thresholds and gate decision in Foldwise's database on PostgreSQL, the
# deployment's schedule and the scheduled runs the server made of it, and the dashboard (HTTP, and
# the run on its Overview page in headless Chromium); then prefect.yaml's Docker-pool deployment, run
# once by a Docker worker in a container of the image (recorded as skipped: nothing new). Everything is
# torn down at the end, volumes too, whether it passed or not; the images stay (the next build reuses them).
# Needs: a Docker daemon, docker-compose (or `docker compose`), debootstrap (first base build only),
# curl, jq, psql, the dev tools in .venv with Debian's chromium for the dashboard check, and pip's
# index for prefect-docker (installed into a temporary folder, not the venv).
# Env: SMOKE_POSTGRES_PORT, SMOKE_PREFECT_PORT, SMOKE_DASHBOARD_PORT (25432, 24200, 28501);
# SMOKE_RUN_TIMEOUT (seconds, 900); SMOKE_KEEP=1 leaves the stack up for a look (`down -v` by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
project=foldwise-smoke
postgres_port=${SMOKE_POSTGRES_PORT:-25432}
prefect_port=${SMOKE_PREFECT_PORT:-24200}
dashboard_port=${SMOKE_DASHBOARD_PORT:-28501}
api=http://127.0.0.1:$prefect_port/api
python=${PYTHON:-.venv/bin/python}
PREFECT_DOCKER_VERSION=0.7.4  # the Docker worker for the work-pool check, tried with Prefect 3.8.8

step() { printf '\n== %s (%ss)\n' "$*" "$(($(date +%s) - started))"; }
fail() { echo "smoke FAILED: $*" >&2; exit 1; }
if docker compose version >/dev/null 2>&1; then compose_command=(docker compose); else compose_command=(docker-compose); fi
work=$(mktemp -d)
compose() {
    "${compose_command[@]}" --project-name "$project" --file docker/compose.yaml --env-file "$work/smoke.env" \
        --profile cpu --profile demo "$@"
}
service_id() { compose ps --all -q "$1"; }
tear_down() {
    local status=$?
    if ((status != 0)); then
        echo "--- logs of the stack (last 60 lines a service) ---" >&2
        compose logs --no-color --tail 60 >&2 || true
    fi
    if [[ -n ${SMOKE_KEEP:-} ]]; then
        echo "SMOKE_KEEP: the stack stays up; remove it: ${compose_command[*]} -p $project -f docker/compose.yaml --env-file $work/smoke.env down -v"
    else
        local down_started=$SECONDS
        compose down --volumes --remove-orphans >/dev/null 2>&1 || true
        rm -rf "$work"
        echo "down: $((SECONDS - down_started))s"
    fi
    exit "$status"
}
trap tear_down EXIT
trap 'exit 130' INT TERM

for tool in docker curl jq psql; do command -v "$tool" >/dev/null || fail "needs $tool"; done
docker info >/dev/null 2>&1 || fail "no Docker daemon answers (start dockerd)"

# Throwaway passwords (URL-safe: Foldwise's goes into a database URL as it is).
cat > "$work/smoke.env" <<EOF
PREFECT_DB_PASSWORD=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
FOLDWISE_DB_PASSWORD=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
FOLDWISE_TORCH=cpu
FOLDWISE_CONFIG=./demo.toml
POSTGRES_PORT=$postgres_port
PREFECT_PORT=$prefect_port
DASHBOARD_PORT=$dashboard_port
EOF
foldwise_password=$(sed -n 's/^FOLDWISE_DB_PASSWORD=//p' "$work/smoke.env")

step "build: base image, wheelhouse, images"
docker/build-base.sh
docker/wheelhouse.sh cpu | tail -n 1
compose build
built=$(date +%s)

step "up"
compose down --volumes --remove-orphans >/dev/null 2>&1 || true  # what an interrupted smoke left
compose up --detach
wait_healthy() {  # service...
    local deadline=$(($(date +%s) + 300)) service health uid
    for service in "$@"; do
        until health=$(docker inspect --format '{{.State.Health.Status}}' "$(service_id "$service")") \
            && [[ $health == healthy ]]; do
            (($(date +%s) < deadline)) || fail "$service is not healthy after 300s ($health)"
            sleep 3
        done
        uid=$(docker exec "$(service_id "$service")" id -u)
        ((uid != 0)) || fail "$service runs as root"
        echo "$service: healthy, user id $uid"
    done
}
wait_healthy postgres prefect-server dashboard worker
demo_data=$(service_id demo-data)
[[ $(docker wait "$demo_data") == 0 ]] || fail "demo-data exited with $(docker inspect --format '{{.State.ExitCode}}' "$demo_data")"
compose logs --no-color demo-data | tail -n 1
deployment=$(curl -fsS "$api/deployments/name/retrain/demo") || fail "no deployment retrain/demo on the server"
deployment_id=$(jq -r .id <<<"$deployment")
up=$(date +%s)

step "schedule"
jq -e '.schedules | length == 1 and .[0].active and .[0].schedule.cron == "0 3 * * *"
    and .[0].schedule.timezone == "UTC"' <<<"$deployment" >/dev/null \
    || fail "the deployment's schedule is not the config's: $(jq -c .schedules <<<"$deployment")"
jq -e '.paused | not' <<<"$deployment" >/dev/null || fail "the deployment is paused"
echo "retrain/demo ($deployment_id): cron '0 3 * * *' (UTC), active"

step "run: retrain/demo through the Prefect API"
flow_run_id=$(curl -fsS -X POST -H 'Content-Type: application/json' -d '{}' \
    "$api/deployments/$deployment_id/create_flow_run" | jq -r .id)
echo "flow run $flow_run_id"
deadline=$(($(date +%s) + ${SMOKE_RUN_TIMEOUT:-900}))
state=""
while :; do
    state=$(curl -fsS "$api/flow_runs/$flow_run_id" | jq -r .state.type)
    [[ $state =~ ^(COMPLETED|FAILED|CRASHED|CANCELLED)$ ]] && break
    (($(date +%s) < deadline)) || fail "flow run $flow_run_id still $state after ${SMOKE_RUN_TIMEOUT:-900}s"
    sleep 5
done
[[ $state == COMPLETED ]] || fail "flow run $flow_run_id ended $state"
ran=$(date +%s)
echo "flow run $flow_run_id: COMPLETED in $((ran - up))s"

step "Foldwise's database (PostgreSQL, port $postgres_port)"
sql() { PGPASSWORD=$foldwise_password psql -h 127.0.0.1 -p "$postgres_port" -U foldwise -d foldwise -X -At -v ON_ERROR_STOP=1 "$@"; }
run=$(sql -F ' ' -c "SELECT id, status FROM runs WHERE flow_run_id = '$flow_run_id'")
read -r run_id status <<<"$run"
[[ $status == succeeded ]] || fail "run of flow run $flow_run_id: '${run:-none}', not succeeded"
metrics=$(sql -c "SELECT count(*) FROM run_metrics WHERE run_id = $run_id
    AND split IN ('oof', 'gate_set') AND fbeta_samples BETWEEN 0 AND 1")
[[ $metrics == 2 ]] || fail "run $run_id has $metrics of its 2 metric rows (oof, gate set)"
labels=$(sql -c "SELECT json_array_length(vocabulary::json) FROM runs WHERE id = $run_id")
thresholds=$(sql -c "SELECT count(*) FROM class_thresholds WHERE run_id = $run_id
    AND threshold BETWEEN 0 AND 1 AND fbeta BETWEEN 0 AND 1")
((thresholds >= 1 && thresholds <= labels)) || fail "run $run_id has $thresholds class thresholds for its $labels labels"
gate=$(sql -c "SELECT promoted FROM model_decisions WHERE candidate_run_id = $run_id AND kind = 'gate'")
[[ $gate == t ]] || fail "run $run_id was not promoted by the gate (first model): '$gate'"
sql -c "SELECT 'run ' || r.id || ': ' || r.status || ', ' || r.dataset_size || ' samples, OOF F2 '
    || round(m.fbeta_samples::numeric, 4) FROM runs r JOIN run_metrics m ON m.run_id = r.id AND m.split = 'oof'
    WHERE r.id = $run_id"
echo "$thresholds class thresholds in [0, 1] for $labels labels; the gate made it champion"

step "scheduled runs made by the server's scheduler"
scheduled=$(curl -fsS -X POST -H 'Content-Type: application/json' "$api/flow_runs/filter" -d "{
    \"deployments\": {\"id\": {\"any_\": [\"$deployment_id\"]}},
    \"flow_runs\": {\"state\": {\"type\": {\"any_\": [\"SCHEDULED\"]}}}}" | jq length)
((scheduled >= 1)) || fail "the server's scheduler made no scheduled run of retrain/demo"
# The whole log first: grep -m1 would close the pipe on a long log, and pipefail take that as a failure.
worker_log=$(compose logs --no-color worker)
grep -m1 -o 'next scheduled run: .*' <<<"$worker_log" || fail "the worker did not report the next run"

step "dashboard (port $dashboard_port)"
[[ $(curl -fsS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$dashboard_port/") == 200 ]] \
    || fail "the dashboard does not answer 200"
"$python" docker/dashboard_shows_run.py "http://127.0.0.1:$dashboard_port" "$run_id"

checked=$(date +%s)
step "Docker work pool: retrain/demo-docker from prefect.yaml, run by a Docker worker"
# prefect-docker (the worker) only here, beside the venv: Foldwise itself does not need it.
"$python" -m pip install --quiet --no-deps --target "$work/prefect-docker" "prefect-docker==$PREFECT_DOCKER_VERSION"
prefect() { PREFECT_API_URL=$api PYTHONPATH=$work/prefect-docker "$python" -m prefect --no-prompt "$@"; }
prefect work-pool create foldwise-docker --type docker >/dev/null
PREFECT_API_URL=$api "$python" -c 'import sys; from prefect.blocks.system import Secret
Secret(value=sys.argv[1]).save("foldwise-db-password")' "$foldwise_password"
FOLDWISE_REPO=$PWD prefect deploy --name demo-docker >/dev/null
pool_deployment_id=$(curl -fsS "$api/deployments/name/retrain/demo-docker" | jq -r .id)
# prefect.yaml names compose project `docker`'s network and volumes; this stack is project $project.
job_variables=$(jq -n --arg project "$project" --arg repo "$PWD" '{networks: [$project + "_default"],
    volumes: [$project + "_data:/data", $project + "_cache:/cache", $repo + "/docker/demo.toml:/config/foldwise.toml:ro"]}')
pool_run_id=$(curl -fsS -X POST -H 'Content-Type: application/json' -d "{\"job_variables\": $job_variables}" \
    "$api/deployments/$pool_deployment_id/create_flow_run" | jq -r .id)
timeout 300 env PREFECT_API_URL=$api PYTHONPATH="$work/prefect-docker" "$python" -m prefect worker start \
    --pool foldwise-docker --run-once >"$work/docker-worker.log" 2>&1 \
    || fail "the Docker worker failed: $(tail -n 20 "$work/docker-worker.log")"
state=$(curl -fsS "$api/flow_runs/$pool_run_id" | jq -r .state.type)
[[ $state == COMPLETED ]] || fail "flow run $pool_run_id of retrain/demo-docker ended $state: $(tail -n 20 "$work/docker-worker.log")"
# Nothing new since the first run: recorded as skipped, in the same database (its password a Prefect Secret).
pool_run=$(sql -c "SELECT status || ': ' || reason FROM runs WHERE flow_run_id = '$pool_run_id'")
[[ $pool_run == skipped:* ]] || fail "run of flow run $pool_run_id: '${pool_run:-none}', not skipped"
echo "flow run $pool_run_id in a container of foldwise:cpu: COMPLETED; run $pool_run"

finished=$(date +%s)
printf '\nsmoke passed: build %ss, up %ss, run %ss, checks %ss, Docker pool %ss, total %ss (+ down)\n' \
    "$((built - started))" "$((up - built))" "$((ran - up))" "$((checked - ran))" "$((finished - checked))" \
    "$((finished - started))"
