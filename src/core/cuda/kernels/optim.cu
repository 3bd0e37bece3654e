// Optimizer updates, the same arithmetic as the CPU loops (PyTorch's torch.optim rules).
extern "C" __global__ void adam_update(float* p, const float* g, float* m, float* v, i64 n, float lr, float b1,
                                       float b2, float eps, float weight_decay, int decoupled, float step,
                                       float bc2_sqrt) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        if (decoupled) p[i] *= 1.0f - lr * weight_decay;
        else if (weight_decay != 0.0f) gi += weight_decay * p[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        p[i] -= step * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
}

extern "C" __global__ void sgd_update(float* p, const float* g, float* velocity, i64 n, float lr, float momentum,
                                      float weight_decay, int nesterov) {
    GRID_STRIDE(i, n) {
        float gi = g[i] + weight_decay * p[i];
        float step = gi;
        if (momentum != 0.0f) {
            velocity[i] = momentum * velocity[i] + gi;
            step = nesterov ? gi + momentum * velocity[i] : velocity[i];
        }
        p[i] -= lr * step;
    }
}
