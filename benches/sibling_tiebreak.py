#!/usr/bin/env python3
"""A tie-break among near-duplicate candidates, tried offline on BM25 rankings dumped by
`benches/fusion_tune.rs` (FUSION_DUMP=F LIMIT=100): for each pair of a query's top
candidates whose word sets overlap (Jaccard >= tau), the one whose own words (those the
other lacks) hold more of the query (IDF-weighted), less a penalty for its own words the
query lacks, gains beta times the difference. Prints each grid point that beats the best so far.
Not adopted (+0.008 at best on a train sample that keeps whole sources; see README).

Usage: python3 benches/sibling_tiebreak.py PAIRS.jsonl DUMP.jsonl [t|v]
(needs `snowballstemmer`, the stemmer family of the engine's analyzer, and numpy)."""
import json,sys,math,re,collections,itertools
import snowballstemmer
from fusion_offline import mrr
st=snowballstemmer.stemmer('english')
STOP=set("a an and are as at be but by for if in into is it no not of on or such that the their then there these they this to was will with".split())
def words(t):
    return [st.stemWord(w) for w in re.findall(r'[a-z0-9]+', t.lower()) if w not in STOP]
pairs=[json.loads(l) for l in open(sys.argv[1])]
dump=[json.loads(l) for l in open(sys.argv[2])]
key=sys.argv[3] if len(sys.argv)>3 else 't'
D=[set(words(p['description'])) for p in pairs]
Q=[set(words(p['summary'])) for p in pairs]
N=len(pairs); df=collections.Counter(w for d in D for w in d)
idf={w:math.log(1+(N-c+.5)/(c+.5)) for w,c in df.items()}
base=[[x[0] for x in d[key]] for d in dump]
print('base',round(mrr(base),4))
def rerank(i,lst,top,tau,beta,gamma):
    cand=lst[:top]; s=[x[1] for x in cand]
    if not s: return [x[0] for x in lst]
    hi,lo=max(s),min(s); ns=[(v-lo)/(hi-lo) if hi>lo else 1.0 for v in s]
    ids=[x[0] for x in cand]; q=Q[i]
    adj=[0.0]*len(ids)
    for a,b in itertools.combinations(range(len(ids)),2):
        A,B=D[ids[a]],D[ids[b]]
        if not A or not B: continue
        j=len(A&B)/len(A|B)
        if j<tau: continue
        ua,ub=A-B,B-A
        ma=sum(idf[w] for w in ua&q); mb=sum(idf[w] for w in ub&q)
        # pairwise preference: matched distinctive words, minus unmatched distinctive mass
        pa=ma-gamma*math.log1p(len(ua-q)); pb=mb-gamma*math.log1p(len(ub-q))
        d=pa-pb
        adj[a]+=d; adj[b]-=d
    sc=[ns[k]+beta*adj[k] for k in range(len(ids))]
    order=sorted(range(len(ids)),key=lambda k:-sc[k])
    return [ids[k] for k in order]+[x[0] for x in lst[top:]]
best=None
for top in (10,20):
  for tau in (0.3,0.5,0.7):
    for beta in (0.02,0.05,0.1,0.2):
      for gamma in (0,0.5,1,2):
        r=[rerank(i,d[key],top,tau,beta,gamma) for i,d in enumerate(dump)]
        m=mrr(r)
        if best is None or m>best[0]: best=(m,top,tau,beta,gamma); print(round(m,4),top,tau,beta,gamma,flush=True)
