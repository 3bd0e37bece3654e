// Softmax cross-entropy, one thread a row: each row's loss and whether its arg-max is the
// label (reduced by loss_stats below), and the mean-loss gradient.
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

// The batch's statistics, one thread: out[0] = the rows' losses summed in order in f64,
// divided by rows, rounded to f32 (the CPU's computation); out[1] = correct rows.
extern "C" __global__ void loss_stats(const float* row_loss, const float* row_correct, i64 rows, float* out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double sum = 0.0;
    float correct = 0.0f;
    for (i64 r = 0; r < rows; r++) {
        sum += (double)row_loss[r];
        correct += row_correct[r];
    }
    out[0] = rows > 0 ? (float)(sum / (double)rows) : 0.0f;
    out[1] = correct;
}
