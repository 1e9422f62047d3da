#!/usr/bin/env bash
# Install castore, create the embedded store ./castore-data (SQLite + blob folder) in the
# current folder, store every file of FOLDER (default: this project's tree) under /ingest,
# and print the space report. Usage: bash scripts/run.sh [FOLDER]
here=$(pwd)
source "$(dirname "$0")/env.sh"
project=$(pwd)
ensure_venv
cd "$here"
folder=${1:-$project}
castore="$project/.venv/bin/castore"
"$castore" init
"$castore" ingest "$folder" /ingest
"$castore" du
