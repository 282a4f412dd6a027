COPY CONDITIONED_ON FROM $data (from='Scene', to='Appearance')
