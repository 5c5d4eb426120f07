# shellcheck shell=bash
# scripts/plot_setup.sh (sourced): makes sure gnuplot is there. The plots need Debian's gnuplot-nox
# (gnuplot without X11; its pngcairo or png terminal writes the PNGs). When it is missing and we run as
# root with apt-get, it says so and installs it (PLOT_NO_INSTALL=1: never install, just say what to run);
# otherwise the message says what to run. Exit 2 when gnuplot cannot be had.
if ! command -v gnuplot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${PLOT_NO_INSTALL:-0}" != 1 ]; then
        echo "gnuplot is missing and the plots need it: installing Debian's gnuplot-nox now with" \
             "'apt-get install -y gnuplot-nox' (set PLOT_NO_INSTALL=1 to stop this)" >&2
        _plot_log=$(mktemp)
        if ! apt-get install -y gnuplot-nox >"$_plot_log" 2>&1; then
            echo "  (retrying after 'apt-get update')" >&2
            { apt-get update && apt-get install -y gnuplot-nox; } >"$_plot_log" 2>&1 ||
                { echo "error: installing gnuplot-nox failed; apt-get said:" >&2; tail -n 5 "$_plot_log" >&2; }
        fi
        rm -f "$_plot_log"
    fi
    command -v gnuplot >/dev/null 2>&1 ||
        { echo "error: gnuplot is missing (the PNGs need it): run 'sudo apt-get install -y gnuplot-nox', then rerun" >&2; exit 2; }
fi
