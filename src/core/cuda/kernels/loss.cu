// Softmax cross-entropy, one thread a row: each row's loss and whether its arg-max is the
// label (summed on the host in f64, as on the CPU), and the mean-loss gradient.
extern "C" __global__ void softmax_cross_entropy(const float* logits, const float* labels, float* dlogits, i64 rows,
                                                 int classes, float* row_loss, float* row_correct) {
    GRID_STRIDE(r, rows) {
        const float* z = logits + r * classes;
        int label = (int)labels[r];
        int best = 0;
        float mx = -INFINITY;
        for (int j = 0; j < classes; j++)
            if (z[j] > mx) {
                mx = z[j];
                best = j;
            }
        float sum = 0.0f;
        for (int j = 0; j < classes; j++) sum += expf(z[j] - mx);
        row_loss[r] = logf(sum) - (z[label] - mx);
        row_correct[r] = best == label ? 1.0f : 0.0f;
        if (dlogits) {
            float inv_rows = 1.0f / rows;
            for (int j = 0; j < classes; j++) {
                float p = expf(z[j] - mx) / sum;
                dlogits[r * classes + j] = (p - (j == label ? 1.0f : 0.0f)) * inv_rows;
            }
        }
    }
}
