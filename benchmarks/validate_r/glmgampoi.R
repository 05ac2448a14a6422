# glmGamPoi: glm_gp with Cox-Reid overdispersions and quasi-likelihood shrinkage, then
# test_de (quasi-likelihood ratio F test) of the condition coefficient.
script_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
source(file.path(script_dir, "common.R"))
suppressPackageStartupMessages(library(glmGamPoi))
d <- read_validation_data()
fit <- glm_gp(d$counts, design = ~condition, col_data = d$samples, size_factors = d$sf,
              overdispersion = TRUE, overdispersion_shrinkage = TRUE)
res <- test_de(fit, contrast = conditionB)
shrink <- fit$overdispersion_shrinkage_list
write_validation("glmgampoi", data.frame(
  pval = res$pval, dispersion = shrink$dispersion_trend, genewise = fit$overdispersions,
  ql_dispersion = shrink$ql_disp_shrunken))
