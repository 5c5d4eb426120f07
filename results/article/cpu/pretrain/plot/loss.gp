set terminal pngcairo font 'sans,9' size 1380,700
set output 'results/article/cpu/pretrain/loss.png'
set multiplot layout 2,3 title "Pre-training: every optimizer from scratch" noenhanced
set grid; set key top right noenhanced; set xlabel 'step'; set ylabel 'loss'
set yrange [3.104:9.101]
set linetype 1 lc rgb '#1f77b4'; set linetype 2 lc rgb '#d62728'; set linetype 3 lc rgb '#2ca02c'; set linetype 4 lc rgb '#9467bd'
set title 'Adam, AdamW' noenhanced
plot 'results/article/cpu/pretrain/plot/adamw.dat' using 1:3 with lines lw 2 lc 1 title 'adamw', 'results/article/cpu/pretrain/plot/adamw.val.dat' using 1:2 with points pt 7 ps 0.8 lc 1 notitle
set title '8-bit Adam' noenhanced
plot 'results/article/cpu/pretrain/plot/adamw.dat' using 1:3 with lines lw 1.5 dt 2 lc rgb '#777777' title 'adamw', 'results/article/cpu/pretrain/plot/adamw.val.dat' using 1:2 with points pt 7 ps 0.8 lc rgb '#777777' notitle, 'results/article/cpu/pretrain/plot/adamw8bit.dat' using 1:3 with lines lw 2 lc 1 title 'adamw8bit', 'results/article/cpu/pretrain/plot/adamw8bit.val.dat' using 1:2 with points pt 7 ps 0.8 lc 1 notitle, 'results/article/cpu/pretrain/plot/adam8bit.dat' using 1:3 with lines lw 2 lc 2 title 'adam8bit', 'results/article/cpu/pretrain/plot/adam8bit.val.dat' using 1:2 with points pt 7 ps 0.8 lc 2 notitle, 'results/article/cpu/pretrain/plot/paged_adamw8bit.dat' using 1:3 with lines lw 2 lc 3 title 'paged adamw8bit', 'results/article/cpu/pretrain/plot/paged_adamw8bit.val.dat' using 1:2 with points pt 7 ps 0.8 lc 3 notitle
set title 'factored second moment' noenhanced
plot 'results/article/cpu/pretrain/plot/adamw.dat' using 1:3 with lines lw 1.5 dt 2 lc rgb '#777777' title 'adamw', 'results/article/cpu/pretrain/plot/adamw.val.dat' using 1:2 with points pt 7 ps 0.8 lc rgb '#777777' notitle, 'results/article/cpu/pretrain/plot/adafactor-default.dat' using 1:3 with lines lw 2 lc 1 title 'adafactor (relative step)', 'results/article/cpu/pretrain/plot/adafactor-default.val.dat' using 1:2 with points pt 7 ps 0.8 lc 1 notitle
set title 'other' noenhanced
plot 'results/article/cpu/pretrain/plot/adamw.dat' using 1:3 with lines lw 1.5 dt 2 lc rgb '#777777' title 'adamw', 'results/article/cpu/pretrain/plot/adamw.val.dat' using 1:2 with points pt 7 ps 0.8 lc rgb '#777777' notitle, 'results/article/cpu/pretrain/plot/adamw4bit.dat' using 1:3 with lines lw 2 lc 1 title 'adamw4bit', 'results/article/cpu/pretrain/plot/adamw4bit.val.dat' using 1:2 with points pt 7 ps 0.8 lc 1 notitle
unset multiplot
