# shellcheck shell=bash
# scripts/plot_setup.sh (sourced): makes sure gnuplot is there. The plots need Debian's gnuplot-nox
# (gnuplot without X11; its pngcairo or png terminal writes the PNGs). Installed here when missing and
# running as root; otherwise the message says what to run.
if ! command -v gnuplot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing gnuplot-nox (apt-get)" >&2
        apt-get install -y gnuplot-nox >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y gnuplot-nox >/dev/null 2>&1; }
    fi
    command -v gnuplot >/dev/null 2>&1 || { echo "error: gnuplot is missing: run 'sudo apt-get install -y gnuplot-nox'" >&2; exit 2; }
fi
