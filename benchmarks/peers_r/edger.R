# edgeR peer: DGEList with lib.size = sf * C (C the geometric mean library size, so the
# offset is log(sf) + log(C)), estimateDisp(y, design) (Cox-Reid APL common, trended and
# tagwise dispersions with empirical-Bayes shrinkage), then glmFit(y, design) at the tagwise
# dispersions.  Timed: estimateDisp + glmFit.  Reported: fit$unshrunk.coefficients (the
# MLE at the tagwise dispersions; fit$coefficients are shrunk by glmFit's prior.count =
# 0.125), natural log; the intercept is shifted by log(C) back to offset log(sf).  edgeR
# is single-threaded.
# Usage: Rscript edger.R <data_dir> <n_cores>
script_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
source(file.path(script_dir, "common.R"))
suppressPackageStartupMessages(library(edgeR))
d <- read_bench_data()
C <- exp(mean(log(colSums(d$Y) / d$sf)))
y <- DGEList(counts = d$Y, lib.size = d$sf * C)
elapsed <- system.time({
  y <- estimateDisp(y, d$X)
  fit <- glmFit(y, d$X)
})[["elapsed"]]
coefs <- fit$unshrunk.coefficients
coefs[, 1] <- coefs[, 1] + log(C)
write_result("edger", coefs, d$X, y$tagwise.dispersion,
             list(seconds = elapsed, version = as.character(packageVersion("edgeR")),
                  n_cores = 1L, log_C = log(C), common_dispersion = y$common.dispersion))
