"""Feasibility check of the chapter's final conv VAE (not part of the book)."""
import sys, time, json
import torch
import dlbook
from dlbook import data, vae

epochs = int(sys.argv[1])
hidden = int(sys.argv[2]) if len(sys.argv) > 2 else 256
lr = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-3
env = dlbook.setup(seed=0)
x_full, y_full = data.load_images("mnist", "train_full", normalize=False)
x_val, y_val = data.load_images("mnist", "val", normalize=False)
x_test, y_test = data.load_images("mnist", "test", normalize=False)
train = data.BatchLoader(x_full, y_full, batch_size=128, shuffle=True)
val = data.BatchLoader(x_val, y_val, batch_size=1000)
test = data.BatchLoader(x_test, y_test, batch_size=1000)
c1 = int(sys.argv[4]) if len(sys.argv) > 4 else 32
model = vae.conv_vae(32, channels=(c1, 2 * c1), hidden=hidden)
printed = [0]


def report(history):
    rows = [r for r in history if "val_neg_elbo" in r]
    for r in rows[printed[0]:]:
        print(f"epoch {r['epoch']:.0f}  train-s {r['seconds']:.0f}  wall {time.time() - t0:.0f}  "
              f"train {r['train_neg_elbo']:.2f}  val {r['val_neg_elbo']:.2f}  test {r['test_neg_elbo']:.2f}",
              flush=True)
    printed[0] = len(rows)
    return False

opt = torch.optim.Adam(model.parameters(), lr=lr)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(train))
t0 = time.time()
hist = dlbook.fit(model, train, step=vae.VAEStep(), optimizer=opt, scheduler=sched,
                  epochs=epochs, evals={"val": val, "test": test}, amp=False, progress=False,
                  stop_when=report)
wall = time.time() - t0
report(hist)
model.eval()
with torch.no_grad():
    torch.manual_seed(1)
    sub = x_test[:2000]
    iw = torch.cat([vae.iwae_bound(model, part, k=100) for part in sub.split(100)])
    ne = dlbook.evaluate(model, data.BatchLoader(sub, y_test[:2000], batch_size=1000), step=vae.VAEStep(), amp=False)
print(f"iwae k=100 on first 2000 test: {iw.mean():.2f}  neg_elbo same images: {ne['neg_elbo']:.2f}")
print(f"wall {wall:.0f} s; threads {torch.get_num_threads()}")
torch.save(model.state_dict(), f"/tmp/vaecheck/conv_vae_{epochs}_{hidden}_{c1}.pt")
