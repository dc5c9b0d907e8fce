#!/usr/bin/env bash
# Test services: a real redis-server on 127.0.0.1 for the online-store tests.
#
#   bash tests/services.sh start   install redis-server if missing (Debian), start it on a free
#                                  port, write tests/.services.env (SHOPREC_TEST_REDIS=host:port);
#                                  install chromium and a Java runtime if missing (Debian)
#   bash tests/services.sh stop    stop the server this script started, remove the env file
#
# tests/conftest.py reads tests/.services.env, so pytest finds the server without any export.
# A machine without root or apt still runs the suite: the Redis tests then skip with a reason.
set -uo pipefail
cd "$(dirname "$0")"
STATE_DIR="${SHOPREC_TEST_STATE:-$(pwd)/.services}"
ENV_FILE="$(pwd)/.services.env"
PID_FILE="$STATE_DIR/redis.pid"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

install_redis() {
    command -v redis-server >/dev/null 2>&1 && return 0
    echo "[services] redis-server missing: installing Debian's redis-server"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null 2>&1
    command -v redis-server >/dev/null 2>&1
}

# The drift-report browser test renders HTML in Debian's headless chromium.
install_chromium() {
    command -v chromium >/dev/null 2>&1 && return 0
    echo "[services] chromium missing: installing Debian's chromium"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null 2>&1
    command -v chromium >/dev/null 2>&1 \
        || echo "[services] WARNING: could not install chromium; browser tests will skip" >&2
}

# The Spark offline-store test runs Spark (pyspark, the dev extra) in local mode: it needs a JRE.
install_java() {
    { [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; } && return 0
    command -v java >/dev/null 2>&1 && return 0
    echo "[services] java missing: installing Debian's openjdk-17-jre-headless"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openjdk-17-jre-headless >/dev/null 2>&1
    command -v java >/dev/null 2>&1 \
        || echo "[services] WARNING: could not install a Java runtime; the Spark offline-store test will skip" >&2
}

start() {
    stop >/dev/null 2>&1
    mkdir -p "$STATE_DIR"
    install_chromium
    install_java
    if ! install_redis; then
        echo "[services] WARNING: could not install redis-server; Redis tests will skip" >&2
        rm -f "$ENV_FILE"
        return 0
    fi
    local port
    port="$(free_port)"
    # No persistence, loopback only, no protected-mode surprises: a throwaway test server.
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --daemonize yes --pidfile "$PID_FILE" --logfile "$STATE_DIR/redis.log" --dir "$STATE_DIR"
    for _ in $(seq 1 50); do
        if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
            echo "SHOPREC_TEST_REDIS=127.0.0.1:$port" > "$ENV_FILE"
            echo "[services] redis-server on 127.0.0.1:$port"
            return 0
        fi
        sleep 0.1
    done
    echo "[services] WARNING: redis-server did not answer on port $port; see $STATE_DIR/redis.log" >&2
    rm -f "$ENV_FILE"
    return 0
}

stop() {
    if [ -f "$PID_FILE" ]; then
        local pid
        pid="$(cat "$PID_FILE")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$PID_FILE"
        echo "[services] redis-server stopped"
    fi
    rm -f "$ENV_FILE"
    rm -rf "$STATE_DIR"  # the log and pid file: nothing is left in the checkout
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 64 ;;
esac
