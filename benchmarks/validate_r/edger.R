# edgeR quasi-likelihood pipeline: estimateDisp (Cox-Reid APL, trend, tagwise), glmQLFit
# (NB dispersion at the trend, QL dispersions squeezed with an abundance trend) and
# glmQLFTest on the condition coefficient. Library sizes are the size factors times a
# constant, so the offsets are log(sf) up to a constant.
script_dir <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
source(file.path(script_dir, "common.R"))
suppressPackageStartupMessages(library(edgeR))
d <- read_validation_data()
C <- exp(mean(log(colSums(d$counts) / d$sf)))
y <- DGEList(counts = d$counts, lib.size = d$sf * C)
design <- model.matrix(~condition, d$samples)
y <- estimateDisp(y, design)
fit <- glmQLFit(y, design)
res <- glmQLFTest(fit, coef = 2)
write_validation("edger", data.frame(
  pval = res$table$PValue, dispersion = y$trended.dispersion, genewise = y$tagwise.dispersion,
  ql_dispersion = fit$var.post, df_prior = rep(fit$df.prior, length.out = nrow(d$counts))))
