COPY CONDITIONED_ON FROM $data (from='Scene', to='Scene')
