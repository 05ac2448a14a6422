# glmGamPoi peer: glm_gp(Y, design = X, size_factors = sf, overdispersion = TRUE,
# on_disk = FALSE).  Third argument "default" keeps glmGamPoi's default
# overdispersion_shrinkage = TRUE (Beta refitted at the trended dispersion, the returned
# overdispersions are the gene-wise estimates); "noshrink" sets it to FALSE (Beta refitted
# at the gene-wise estimates).  glmGamPoi is single-threaded.
# Usage: Rscript glmgampoi.R <data_dir> <n_cores> <default|noshrink>
script_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
source(file.path(script_dir, "common.R"))
variant <- if (length(args) >= 3) args[[3]] else "default"
suppressPackageStartupMessages(library(glmGamPoi))
d <- read_bench_data()
shrink <- variant != "noshrink"
elapsed <- system.time(
  fit <- glm_gp(d$Y, design = d$X, size_factors = d$sf, overdispersion = TRUE,
                overdispersion_shrinkage = shrink, on_disk = FALSE)
)[["elapsed"]]
prefix <- if (shrink) "glmgampoi" else "glmgampoi-noshrink"
write_result(prefix, fit$Beta, fit$model_matrix, fit$overdispersions,
             list(seconds = elapsed, version = as.character(packageVersion("glmGamPoi")),
                  n_cores = 1L, overdispersion_shrinkage = shrink))
