# glmmTMB reference fits for tests/test_mixed_glmmtmb.py.
# Reads tests/data/mixed_{design}_counts.csv / _obs.csv (benchmarks/mixed_simulate_reference.py)
# and writes tests/data/mixed_{design}_glmmtmb.csv: per gene the Laplace marginal
# log-likelihood, fixed effects and their standard errors, the donor variance (natural-log
# scale), the NB size r (glmmTMB's nbinom2 dispersion "sigma" is r) and convergence.
# Run from the repository root: Rscript benchmarks/mixed_glmmtmb_reference.R [reml] [design ...]
# With "reml" first, the fits use REML = TRUE (fixed effects integrated out with the random
# effects in the Laplace approximation; loglik is then the restricted log-likelihood) and
# are written to tests/data/mixed_{design}_glmmtmb_reml.csv.
suppressPackageStartupMessages(library(glmmTMB))
dir <- "tests/data"
formulas <- list(intercept = y ~ 1 + (1 | donor),
                 condition = y ~ condition + x + (1 | donor),
                 nested = y ~ condition + (1 | batch) + (1 | donor))
args <- commandArgs(TRUE)
reml <- length(args) > 0 && args[1] == "reml"
if (reml) args <- args[-1]
if (length(args)) formulas <- formulas[args]
for (design in names(formulas)) {
  counts <- read.csv(file.path(dir, sprintf("mixed_%s_counts.csv", design)), row.names = 1)
  obs <- read.csv(file.path(dir, sprintf("mixed_%s_obs.csv", design)), row.names = 1)
  rows <- list()
  for (gene in colnames(counts)) {
    df <- obs
    df$y <- counts[[gene]]
    fit <- tryCatch(
      glmmTMB(formulas[[design]], data = df, family = nbinom2, REML = reml,
              control = glmmTMBControl(optCtrl = list(iter.max = 1000, eval.max = 1000))),
      error = function(e) NULL)
    if (is.null(fit)) next
    cf <- summary(fit)$coefficients$cond
    est <- cf[, "Estimate"]; se <- cf[, "Std. Error"]
    names(est) <- paste0("coef_", rownames(cf)); names(se) <- paste0("se_", rownames(cf))
    vc <- VarCorr(fit)$cond
    row <- data.frame(
      gene = gene, loglik = as.numeric(logLik(fit)), t(est), t(se),
      donor_var = vc$donor[1, 1], size = sigma(fit), converged = fit$fit$convergence == 0 &&
        isTRUE(fit$sdr$pdHess), check.names = FALSE)
    if (!is.null(vc$batch)) row$batch_var <- vc$batch[1, 1]
    rows[[gene]] <- row
  }
  out <- do.call(rbind, rows)
  name <- sprintf(if (reml) "mixed_%s_glmmtmb_reml.csv" else "mixed_%s_glmmtmb.csv", design)
  write.csv(out, file.path(dir, name), row.names = FALSE)
  cat(design, nrow(out), "genes\n")
}
