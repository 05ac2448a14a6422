# Shared input for the small-sample validation (benchmarks/validate_small_samples.py).
# Input directory (first argument): counts.csv (features x samples, header, row names),
# samples.csv (columns sample, condition A/B, sf). Each tool writes <tool>.csv with one row
# per feature: pval and its dispersions.
args <- commandArgs(trailingOnly = TRUE)
data_dir <- args[[1]]
read_validation_data <- function(dir = data_dir) {
  counts <- as.matrix(read.csv(file.path(dir, "counts.csv"), row.names = 1, check.names = FALSE))
  storage.mode(counts) <- "integer"
  samples <- read.csv(file.path(dir, "samples.csv"), stringsAsFactors = FALSE)
  samples$condition <- factor(samples$condition, levels = c("A", "B"))
  rownames(samples) <- samples$sample
  list(counts = counts, samples = samples, sf = samples$sf)
}
write_validation <- function(tool, table, dir = data_dir) {
  write.csv(table, file.path(dir, paste0(tool, ".csv")), row.names = FALSE)
}
