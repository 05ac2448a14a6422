# Shared input/output for the R peers of benchmarks/peers.py.
#
# Input directory (first command-line argument):
#   counts.i32  -- int32, n_obs x n_features, row-major (numpy C order), i.e. the
#                  column-major features x obs matrix R wants
#   dims.tsv    -- n_obs, n_features, p (one per line)
#   design.tsv  -- location design (tab separated, header), n_obs x p
#   meta.tsv    -- condition / batch labels (tab separated, header)
#   sf.tsv      -- size factors (one per line)
# Output, into the same directory, with a prefix given by the peer script:
#   <prefix>_coef.f64   -- double, n_features x p, row-major, natural log scale
#   <prefix>_design.f64 -- double, n_obs x p, row-major: the model matrix used
#   <prefix>_alpha.f64  -- double, n_features: final dispersion (var = mu + alpha mu^2)
#   <prefix>_alpha_raw.f64 -- optional, gene-wise (unshrunk) dispersion
#   <prefix>_info.tsv   -- key <TAB> value lines (seconds, version, ...)
# Reading and writing are not timed; each peer times its fit with system.time().

args <- commandArgs(trailingOnly = TRUE)
data_dir <- args[[1]]
n_cores <- if (length(args) >= 2) as.integer(args[[2]]) else 1L

read_bench_data <- function(dir = data_dir) {
  dims <- scan(file.path(dir, "dims.tsv"), quiet = TRUE)
  n_obs <- dims[[1]]
  n_features <- dims[[2]]
  con <- file(file.path(dir, "counts.i32"), "rb")
  v <- readBin(con, what = "integer", n = n_obs * n_features, size = 4)
  close(con)
  Y <- matrix(v, nrow = n_features, ncol = n_obs)
  rownames(Y) <- paste0("feature", seq_len(n_features) - 1L)
  colnames(Y) <- paste0("obs", seq_len(n_obs) - 1L)
  X <- as.matrix(read.table(file.path(dir, "design.tsv"), header = TRUE, sep = "\t",
                            check.names = FALSE))
  meta <- read.table(file.path(dir, "meta.tsv"), header = TRUE, sep = "\t",
                     stringsAsFactors = TRUE)
  rownames(meta) <- colnames(Y)
  sf <- scan(file.path(dir, "sf.tsv"), quiet = TRUE)
  list(Y = Y, X = X, meta = meta, sf = sf)
}

write_f64 <- function(x, name, dir = data_dir) {
  con <- file(file.path(dir, name), "wb")
  writeBin(as.double(x), con, size = 8)
  close(con)
}

write_result <- function(prefix, coef, design, alpha, info, alpha_raw = NULL,
                         dir = data_dir) {
  write_f64(t(coef), paste0(prefix, "_coef.f64"), dir)  # t(): row-major features x p
  write_f64(t(design), paste0(prefix, "_design.f64"), dir)
  write_f64(alpha, paste0(prefix, "_alpha.f64"), dir)
  if (!is.null(alpha_raw)) write_f64(alpha_raw, paste0(prefix, "_alpha_raw.f64"), dir)
  info$r_version <- paste(R.version$major, R.version$minor, sep = ".")
  lines <- paste(names(info), vapply(info, function(v) paste(v, collapse = ","), ""), sep = "\t")
  writeLines(lines, file.path(dir, paste0(prefix, "_info.tsv")))
}
