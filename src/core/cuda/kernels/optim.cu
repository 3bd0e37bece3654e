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

__device__ void sgd1(float* p, float g, float* velocity, float lr, float momentum, float weight_decay, int nesterov) {
    float gi = g + weight_decay * *p;
    float step = gi;
    if (momentum != 0.0f) {
        *velocity = momentum * *velocity + gi;
        step = nesterov ? gi + momentum * *velocity : *velocity;
    }
    *p -= lr * step;
}

// Four values at a time where the pointers allow it (`stream4`, common.cuh): the LCN's 190M
// weights make this a stream of 5 x 760 MB a step.
extern "C" __global__ void sgd_update(float* p, const float* g, float* velocity, i64 n, float lr, float momentum,
                                      float weight_decay, int nesterov) {
    stream4(
        n, AL16(p) && AL16(g) && AL16(velocity),
        [&](i64 i) {
            // no velocity without momentum (the scalar rule never touches it then)
            float4 w = F4(p)[i], d = CF4(g)[i], v = momentum != 0.0f ? F4(velocity)[i] : make_float4(0, 0, 0, 0);
            sgd1(&w.x, d.x, &v.x, lr, momentum, weight_decay, nesterov);
            sgd1(&w.y, d.y, &v.y, lr, momentum, weight_decay, nesterov);
            sgd1(&w.z, d.z, &v.z, lr, momentum, weight_decay, nesterov);
            sgd1(&w.w, d.w, &v.w, lr, momentum, weight_decay, nesterov);
            F4(p)[i] = w;
            if (momentum != 0.0f) F4(velocity)[i] = v;
        },
        [&](i64 i) { sgd1(&p[i], g[i], &velocity[i], lr, momentum, weight_decay, nesterov); });
}
